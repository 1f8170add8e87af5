"""Draining: a server told to stop (SIGTERM) leaves the balancer before it stops listening.

What plain ``conveyor serve`` does on SIGTERM (uvicorn): each worker stops
accepting at once, closes its idle keep-alive connections, finishes the requests
in flight and exits. Behind a balancer that is a race: the balancer still sends
requests on connections being closed, and to a socket nobody accepts on any
more (with several workers the parent process holds the listening socket open
until every worker is gone, so a new connection is accepted by the kernel and
then reset).

A fleet server (:func:`worker_app`, what ``conveyor fleet up`` runs) drains first.
On the first SIGTERM each worker:

1. answers ``GET /v2/health/ready`` with ``503 {"ready": false, "status": "draining"}``
   while it keeps answering every other request;
2. waits until the balancer has stopped sending: at least ``fleet.detect_s`` (its
   ``fall`` checks), and then until no request came for ``fleet.quiet_s``, at most
   ``fleet.drain_s``;
3. then does what uvicorn does on SIGTERM: stops accepting, finishes the requests in
   flight, flushes its event log, exits.

A second SIGTERM, or SIGINT, skips what is left of the wait.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any

__all__ = ["Draining", "worker_app"]

log = logging.getLogger("conveyor.fleet")

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
Receive = Any
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

_READY = "/v2/health/ready"
_DRAINING_BODY = b'{"ready":false,"status":"draining","message":"this server is stopping"}'
Handler = Callable[[int, FrameType | None], Any] | int | None


class Draining:
    """Pure ASGI around a server app: readiness fails while draining, and SIGTERM drains.

    ``min_s`` is how long readiness fails before the server may stop (the balancer's
    detection time), ``quiet_s`` how long no request must have come, ``max_s`` the
    longest wait.
    """

    def __init__(self, app: ASGIApp, *, min_s: float, quiet_s: float, max_s: float) -> None:
        self.app = app
        self.min_s = min_s
        self.quiet_s = quiet_s
        self.max_s = max_s
        #: monotonic time the drain began (None: serving normally).
        self.since: float | None = None
        self.last_request = 0.0
        self._previous: Handler = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self.since is not None and scope["path"] == _READY:
                await _answer_draining(send)
                return
            self.last_request = time.monotonic()
        elif kind == "lifespan":
            self._install()
        await self.app(scope, receive, send)

    # -- the signal -----------------------------------------------------------------

    def _install(self) -> None:
        """Put our SIGTERM handler in front of uvicorn's (it is installed by now)."""
        if threading.current_thread() is not threading.main_thread() or self._loop is not None:
            return  # a server in a thread (tests): nobody sends it signals
        self._loop = asyncio.get_running_loop()
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.since is not None:  # a second SIGTERM: stop now
            self._stop(sig, frame)
            return
        self.begin()

    def begin(self) -> None:
        """Start draining (what SIGTERM does); the process stops at the end of the drain."""
        if self.since is not None:
            return
        self.since = time.monotonic()
        log.info(
            "draining: readiness fails; stopping once the balancer stops sending "
            "(after %.2f s, then %.2f s without a request, at most %.0f s)",
            self.min_s,
            self.quiet_s,
            self.max_s,
        )
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_wait)

    def _start_wait(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._wait())

    async def _wait(self) -> None:
        assert self.since is not None
        while True:
            now = time.monotonic()
            elapsed = now - self.since
            if elapsed >= self.max_s:
                log.warning("drain: requests still coming after %.0f s; stopping", elapsed)
                break
            if elapsed >= self.min_s and now - self.last_request >= self.quiet_s:
                log.info("drained in %.2f s: stopping", elapsed)
                break
            await asyncio.sleep(0.05)
        self._stop(signal.SIGTERM, None)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        previous = self._previous
        if callable(previous):
            previous(sig, frame)
        else:  # nobody had a handler: what SIGTERM does by default
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)


async def _answer_draining(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_DRAINING_BODY)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _DRAINING_BODY})


def worker_app() -> Any:
    """One worker of a fleet server (uvicorn factory): the model server's app over the
    project named by ``CONVEYOR_SERVE_PROJECT``, draining on SIGTERM."""
    import os

    from conveyor.fleet.settings import fleet_of
    from conveyor.project import Project
    from conveyor.serving.app import create_app
    from conveyor.serving.server import PROJECT_ENV

    proj = Project.open(os.environ[PROJECT_ENV])
    fleet = fleet_of(proj.spec)
    app = create_app(proj, on_close=proj.close)
    if fleet.balancer == "haproxy":
        return Draining(app, min_s=fleet.detect_s, quiet_s=fleet.quiet_s, max_s=fleet.drain_s)
    # nginx never reads readiness: it keeps sending until the server stops listening, and
    # then sends what is refused elsewhere. Waiting longer would only delay that.
    return Draining(app, min_s=0.0, quiet_s=fleet.quiet_s, max_s=min(fleet.drain_s, 1.0))
