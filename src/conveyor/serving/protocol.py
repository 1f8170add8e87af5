"""The HTTP protocol the server speaks: uvicorn's httptools protocol, with a header deadline.

uvicorn closes idle keep-alive connections and caps concurrency, but waits for
a request's headers forever: a client that opens connections and sends a
header line now and then (slowloris) holds them until the process runs out of
file descriptors. Here every request's headers must be complete within
``header_timeout_s`` of its first byte (or of the connection, for the first
one); otherwise the connection is closed. The body has its own deadline in the
request pipeline (:class:`conveyor.web.pipeline.InputLimits`, 408).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from conveyor.web import inflight

__all__ = ["HEADER_TIMEOUT_ENV", "GuardedHttpToolsProtocol", "guarded_protocol"]

log = logging.getLogger("conveyor.serving")

#: Where ``conveyor serve`` passes ``serving.header_timeout_s`` to its worker processes
#: (uvicorn imports the protocol class by name in each worker).
HEADER_TIMEOUT_ENV = "CONVEYOR_SERVE_HEADER_TIMEOUT"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers are late."""

    #: The deadline; None reads ``CONVEYOR_SERVE_HEADER_TIMEOUT`` (10 s when unset) when a
    #: connection opens, so the worker sees what ``conveyor serve`` set.
    header_timeout_s: float | None = None
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        inflight.watch(self.server_state)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _deadline(self) -> float:
        found = self.header_timeout_s
        return found if found is not None else float(os.environ.get(HEADER_TIMEOUT_ENV) or 10.0)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self._deadline(), self._late)

    def _disarm(self) -> None:
        timer, self._header_timer = self._header_timer, None
        if timer is not None:
            timer.cancel()

    def _late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            client: Any = self.client
            log.info(
                "closed a connection from %s: no complete headers within %g s",
                client[0] if client else "?",
                self._deadline(),
            )
            self.transport.close()


def guarded_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class with this header deadline, for a server in this process."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout_s": float(header_timeout_s)},
    )
