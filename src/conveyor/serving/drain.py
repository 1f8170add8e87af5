"""Draining: a server told to stop (SIGTERM) leaves its balancer before it stops listening.

What uvicorn alone does on SIGTERM: each worker stops accepting at once, closes
its idle keep-alive connections, finishes the requests in flight and exits.
Behind a balancer (nginx, HAProxy, a Kubernetes Service) that is a race: the
balancer still sends requests on connections being closed, and to a socket
nobody accepts on any more (with several workers the parent process holds the
listening socket open until every worker is gone, so a new connection is
accepted by the kernel and then reset).

Every ``conveyor serve`` worker (and every fleet server's, :mod:`conveyor.fleet.drain`)
drains first. On the first SIGTERM each worker:

1. answers ``GET /v2/health/ready`` with ``503 {"ready": false, "status": "draining"}``
   at once, while it keeps answering every other request and accepting connections;
2. waits until the balancer has stopped sending: at least ``min_s`` (its detection
   time), and then until no request came for ``quiet_s``, at most ``max_s``;
3. then does what uvicorn does on SIGTERM: stops accepting, finishes the requests in
   flight (at most ``serving.drain.graceful_s``), flushes its event log, exits 0.

A second SIGTERM, or SIGINT (Ctrl-C), skips what is left of the wait.

**A stop that always ends.** Once uvicorn starts the app's shut-down, a watchdog
thread gives it ``shutdown_s``, and the interpreter ``exit_s`` more once the
shut-down is done. A call still out to a service that hangs (a PostgreSQL or Redis
behind a stopped proxy answers nothing, and TCP keepalives are answered by the
kernel) holds a thread that asyncio's executor shut-down, and then the interpreter,
would join for ever; past the deadline the watchdog logs which threads were still
running, with their stacks, and ends the process (``os._exit``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = ["READY_PATH", "Draining", "ExitWatchdog", "draining_app"]

log = logging.getLogger("conveyor.serving")

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
Receive = Any
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

#: The readiness a balancer checks; it fails first when a worker drains.
READY_PATH = "/v2/health/ready"
_DRAINING_BODY = b'{"ready":false,"status":"draining","message":"this server is stopping"}'
Handler = Callable[[int, FrameType | None], Any] | int | None


class Draining:
    """Pure ASGI around a server app: readiness fails while draining, and SIGTERM drains.

    ``min_s`` is how long readiness fails before the server may stop (the balancer's
    detection time), ``quiet_s`` how long no request must have come, ``max_s`` the
    longest wait.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        min_s: float,
        quiet_s: float,
        max_s: float,
        shutdown_s: float = 30.0,
        exit_s: float = 5.0,
    ) -> None:
        self.app = app
        self.min_s = min_s
        self.quiet_s = quiet_s
        self.max_s = max_s
        self.watchdog = ExitWatchdog(shutdown_s, exit_s)
        #: monotonic time the drain began (None: serving normally).
        self.since: float | None = None
        self.last_request = 0.0
        self._previous: Handler = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self.since is not None and scope["path"] == READY_PATH:
                await _answer_draining(send)
                return
            self.last_request = time.monotonic()
        elif kind == "lifespan":
            self._install()
            if self._loop is not None:  # a process of its own: its stop must end
                receive, send = self.watchdog.wrap(receive, send)
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
            "draining: readiness fails; stopping once no request comes "
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
        server = getattr(previous, "__self__", None)
        if server is not None and hasattr(server, "should_exit"):
            # uvicorn's Server: stop it as its handler would, without its handler's
            # bookkeeping, which raises the signal again once shut down: the process would
            # die of SIGTERM (status -15) after a clean stop instead of exiting 0.
            server.should_exit = True
        elif callable(previous):
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


def draining_app(
    proj: Project,
    *,
    min_s: float | None = None,
    quiet_s: float | None = None,
    max_s: float | None = None,
) -> Draining:
    """The model server's app over ``proj`` (closed with it), draining on SIGTERM as
    ``serving.drain`` says; ``min_s``, ``quiet_s`` and ``max_s`` replace its window (a fleet
    server sizes it from its balancer)."""
    from conveyor.serving.app import create_app
    from conveyor.serving.settings import serving_of

    drain = serving_of(proj.spec).drain

    def close() -> None:
        # The event log first, bounded: Project.close would wait for its last commit for
        # ever if its database stopped answering.
        try:
            proj.events.close(drain.shutdown_s * 0.25)  # a flush and a join: twice this
        except Exception as exc:
            log.error("shut-down: %s", exc)
        proj.close()

    return Draining(
        create_app(proj, on_close=close),
        min_s=drain.min_s if min_s is None else min_s,
        quiet_s=drain.quiet_s if quiet_s is None else quiet_s,
        max_s=drain.max_s if max_s is None else max_s,
        shutdown_s=drain.shutdown_s,
    )


class ExitWatchdog:
    """Ends the process if its shut-down, or the interpreter's exit after it, hangs.

    :meth:`wrap` wraps the lifespan's ``receive`` and ``send``: the ``lifespan.shutdown``
    message arms it for ``shutdown_s``; ``lifespan.shutdown.complete`` (or ``failed``)
    moves the deadline to ``exit_s`` from then. A daemon thread, so a process that
    exits in time never waits for it.
    """

    def __init__(self, shutdown_s: float, exit_s: float) -> None:
        self.shutdown_s = shutdown_s
        self.exit_s = exit_s
        self.deadline: float | None = None
        self.stage = "shut-down"
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None

    def wrap(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        async def receiving() -> Message:
            message: Message = await receive()
            if message.get("type") == "lifespan.shutdown":
                self.arm(self.shutdown_s, "shut-down")
            return message

        async def sending(message: Message) -> None:
            await send(message)
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                self.arm(self.exit_s, "exit after the shut-down")

        return receiving, sending

    def arm(self, seconds: float, stage: str) -> None:
        """End the process unless it is gone within ``seconds``."""
        self.deadline = time.monotonic() + seconds
        self.stage = stage
        self._changed.set()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, name="conveyor-exit-watchdog", daemon=True
            )
            self._thread.start()

    def _watch(self) -> None:
        while True:
            deadline = self.deadline
            assert deadline is not None
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._changed.wait(left)
            self._changed.clear()
        stuck = running_threads()
        log.error(
            "the %s did not finish within its %.0f s: ending the process; threads still "
            "running (calls to a service that does not answer):\n%s",
            self.stage,
            self.shutdown_s if self.stage == "shut-down" else self.exit_s,
            stuck or "none",
        )
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        os._exit(0 if self.stage != "shut-down" else 1)


def running_threads() -> str:
    """The threads of this process other than the caller's, each with where it stands."""
    frames = sys._current_frames()
    lines = []
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.ident is None:
            continue
        frame = frames.get(thread.ident)
        where = "".join(traceback.format_stack(frame, limit=4)) if frame is not None else ""
        lines.append(f"{thread.name} (daemon={thread.daemon}):\n{where}")
    return "\n".join(lines)
