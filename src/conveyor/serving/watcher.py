"""Routes as data: every worker polls the store and switches only to loaded versions.

Each poll is one small SELECT of ``(model, revision)`` (run in a thread).
When a revision changed, the worker reads the new policy, loads and warms
every version it names (serving, shadow and flag versions) *before*
swapping the compiled route in, so requests never meet an unloaded
version: a rollback takes effect within one poll plus a load, and fails
nothing. The cache's set of reachable versions follows the routes.

When a new revision cannot be loaded (a tampered artifact, a failed
warm-up), the worker keeps serving the revision it had and is *degraded*:
the model is in :attr:`RouteWatcher.failures` (readiness is false and says
why, a gauge is 1, a ``route.failed`` event is written once per revision
and worker), and the load is retried every ``retry_s`` until it works, when
a ``route.applied`` event closes the incident. A model with no revision
loaded at all answers 503 ``model_unavailable`` with the reason, never 404.

On PostgreSQL a route change is also *pushed*: the transaction that writes it
sends ``NOTIFY conveyor_routes`` (:data:`~conveyor.serving.route_store.ROUTES_CHANNEL`),
and every worker listens (``LISTEN``) on one connection of its own (:class:`RouteListener`,
a thread, shared by everything in the process that follows routes: the model routes and
the gateway's, through :func:`subscribe`), which wakes the poll at once: a change reaches
every worker of every server in a few milliseconds plus the load. Polling stays, as the
fallback for a notice missed while the listener reconnects (it reconnects by itself, with
backoff, and polls once more when it is back) and for SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor._daemon import DaemonWorker

if TYPE_CHECKING:
    from conveyor.serving.cache import PredictionCache
    from conveyor.serving.pool import ModelPool
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import CompiledRoute

__all__ = [
    "NOTHING_DEPLOYED",
    "RouteFailure",
    "RouteListener",
    "RouteWatcher",
    "in_daemon_thread",
]

log = logging.getLogger("conveyor.serving")
T = TypeVar("T")


@dataclass
class RouteFailure:
    """A model whose live revision this worker could not load."""

    model: str
    revision: int
    #: ``artifact_tampered``, ``warm_up_failed``, ``not_found`` or ``load_failed``.
    reason: str
    message: str
    since: float
    retry_at: float
    #: The revision still served instead (None: nothing, requests get 503).
    serving_revision: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "serving_revision": self.serving_revision,
            "reason": self.reason,
            "message": self.message,
            "for_s": round(time.monotonic() - self.since, 3),
        }


def _reason_of(exc: BaseException) -> str:
    from conveyor.errors import ConveyorError, ModelUnavailableError, NotFoundError

    if isinstance(exc, ModelUnavailableError):
        return str(exc.context.get("reason", "load_failed"))
    if isinstance(exc, NotFoundError):
        return "not_found"
    if isinstance(exc, ConveyorError):
        return exc.code
    return "load_failed"


#: What readiness (and ``conveyor serve``) says while no model has a route.
NOTHING_DEPLOYED = (
    "nothing is deployed: no model has a route, so there is nothing to predict with; "
    "deploy a version with `conveyor deploy NAME@VERSION`"
)


class RouteListener:
    """``LISTEN conveyor_routes`` on a psycopg connection of its own, in a daemon thread:
    ``on_notice(model, revision)`` for each change to this schema's routes (revision None:
    deleted), and ``on_notice(None, None)`` after every (re)connection, when notices may
    have been missed. A lost connection is retried with backoff (0.1 s doubling to 5 s);
    it never raises into the caller."""

    #: How long a wait for notices lasts before the stop flag is looked at again: what a
    #: stop waits for at most. Five idle wake-ups a second cost nothing to speak of.
    stop_within_s = 0.2

    def __init__(
        self,
        dsn: str,
        on_notice: Callable[[str | None, int | None], None],
        *,
        connect_timeout_s: float = 3.0,
    ) -> None:
        self.dsn = dsn
        self.on_notice = on_notice
        self.connect_timeout_s = connect_timeout_s
        #: True while a LISTEN connection is up.
        self.connected = False
        #: Notices received, and (re)connections made: for metrics and tests.
        self.notices = 0
        self.connections = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RouteListener:
        self._thread = threading.Thread(
            target=self._run, name="conveyor-route-listener", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.1
            except Exception as exc:  # the store is down or went away: try again
                if self.connected or self.last_error is None:
                    log.warning("route listener lost its connection: %s", exc)
                self.connected = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _listen(self) -> None:
        import psycopg

        from conveyor.serving.route_store import ROUTES_CHANNEL, parse_notice

        with psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=max(1, round(self.connect_timeout_s)),
            # A peer that vanished without a FIN is noticed by keepalives, not never.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            # Which process listens, as pg_stat_activity shows it.
            application_name=f"conveyor-routes:{os.getpid()}",
        ) as conn:
            schema = conn.execute("SELECT current_schema()").fetchone()
            conn.execute(f"LISTEN {ROUTES_CHANNEL}")
            mine = schema[0] if schema else None
            self.connected = True
            self.connections += 1
            self.last_error = None
            self.on_notice(None, None)  # whatever happened while not listening
            while not self._stop.is_set():
                for notice in conn.notifies(timeout=self.stop_within_s):
                    try:
                        where, model, revision = parse_notice(notice.payload)
                    except ValueError:
                        continue
                    if where == mine:
                        self.notices += 1
                        self.on_notice(model, revision)
                    if self._stop.is_set():
                        break


def _ignore(model: str | None, revision: int | None) -> None:
    pass


#: The process's shared listeners, by DSN, with their subscribers (see :func:`subscribe`).
_SHARED: dict[str, tuple[RouteListener, list[Callable[[str | None, int | None], None]]]] = {}
_SHARED_LOCK = threading.Lock()


def subscribe(dsn: str, on_notice: Callable[[str | None, int | None], None]) -> RouteListener:
    """The process's one :class:`RouteListener` on ``dsn`` (started on the first call),
    calling ``on_notice`` too: one LISTEN connection a process whatever follows the routes
    (the model routes and the gateway's), not one each. Give it back with
    :func:`unsubscribe`; the last subscriber's going stops it."""
    with _SHARED_LOCK:
        shared = _SHARED.get(dsn)
        if shared is None:
            subscribers: list[Callable[[str | None, int | None], None]] = []

            def fan_out(model: str | None, revision: int | None) -> None:
                for call in list(subscribers):
                    try:
                        call(model, revision)
                    except Exception:  # one subscriber's fault is not the others'
                        log.exception("a route notice's subscriber failed")

            shared = (RouteListener(dsn, fan_out), subscribers)
            _SHARED[dsn] = shared
            shared[1].append(on_notice)
            shared[0].start()
        else:
            shared[1].append(on_notice)
            if shared[0].connected:  # it will not say (None, None) again until it reconnects
                on_notice(None, None)
        return shared[0]


def unsubscribe(
    listener: RouteListener, on_notice: Callable[[str | None, int | None], None]
) -> None:
    """Stop calling ``on_notice``; stop the listener (blocking up to its stop time) when
    no subscriber is left."""
    with _SHARED_LOCK:
        shared = _SHARED.get(listener.dsn)
        if shared is None or shared[0] is not listener:
            return
        with contextlib.suppress(ValueError):
            shared[1].remove(on_notice)
        if shared[1]:
            return
        del _SHARED[listener.dsn]
    listener.stop()


def in_daemon_thread(
    loop: asyncio.AbstractEventLoop, fn: Callable[[], T], worker: DaemonWorker
) -> asyncio.Future[T]:
    """``fn()`` on ``worker``'s daemon thread; its outcome in a future of ``loop``. Unlike
    ``run_in_executor``, nothing joins that thread at shut-down or exit: for calls that
    may never return (a hung service). The thread is long-lived: starting one per call
    held the event loop until the new thread's first turn at the GIL."""
    future: asyncio.Future[T] = loop.create_future()

    def deliver(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(outcome)

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:
            error = exc
            deliver(lambda: None if future.done() else future.set_exception(error))
        else:
            deliver(lambda: None if future.done() else future.set_result(result))

    worker.submit(run)
    return future


class RouteWatcher:
    """The live compiled routes of this worker, kept in step with the store."""

    def __init__(
        self,
        routes: RouteStore,
        pool: ModelPool,
        *,
        cache: PredictionCache | None = None,
        interval_s: float = 0.5,
        retry_s: float = 10.0,
        on_change: Callable[[str, RouteFailure | None], None] | None = None,
        listen: bool = True,
        listen_dsn: str | None = None,
        poll_timeout_s: float = 5.0,
    ) -> None:
        self.store = routes
        self.pool = pool
        self.cache = cache
        self._poller = DaemonWorker("conveyor-route-poll")
        self.interval_s = interval_s
        self.retry_s = retry_s
        #: Called with (model, failure) when a model becomes degraded, (model, None) when
        #: it recovers: the server's gauge.
        self.on_change = on_change
        #: model -> why its live revision is not the one served here.
        self.failures: dict[str, RouteFailure] = {}
        #: model -> compiled route; replaced whole, so readers never see half a change.
        self.routes: dict[str, CompiledRoute] = {}
        self.revisions: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.ready = False
        self.last_error: str | None = None
        #: Pushed changes (PostgreSQL): ``listen=False`` polls only. ``listen_dsn``: where to
        #: LISTEN when the store's URL is a transaction-mode pooler (PgBouncer), which
        #: cannot hold a LISTEN: the database directly, or a session-mode pool.
        self.listen = listen
        self.listen_dsn = listen_dsn
        self.listener: RouteListener | None = None
        self._notice: Callable[[str | None, int | None], None] = _ignore
        self._wake: asyncio.Event | None = None
        #: The longest wait for one poll; the poll in flight (one at most).
        self.poll_timeout_s = poll_timeout_s
        self._poll: asyncio.Future[dict[str, int]] | None = None

    @property
    def degraded(self) -> bool:
        return bool(self.failures)

    async def refresh(self) -> bool:
        """One poll; True when something changed. Load errors keep the old route."""
        loop = asyncio.get_running_loop()
        current = await self._revisions(loop)
        now = time.monotonic()
        changed = {
            m
            for m, r in current.items()
            if self.revisions.get(m) != r
            and not ((f := self.failures.get(m)) and f.revision == r and now < f.retry_at)
        }
        removed = set(self.revisions) - set(current)
        removed |= set(self.failures) - set(current)
        if not changed and not removed:
            self.ready = True
            return False
        routes = dict(self.routes)
        revisions = dict(self.revisions)
        for model in removed:
            routes.pop(model, None)
            revisions.pop(model, None)
            self._recovered(model, None)
        for model in sorted(changed):
            try:
                state = await loop.run_in_executor(None, self.store.get, model)
                compiled = state.policy.compiled()
                await asyncio.gather(
                    *(self.pool.ensure(model, v) for v in state.policy.all_versions())
                )
            except Exception as exc:  # a bad version must not take the other routes down
                self._failed(model, current[model], exc, revisions.get(model))
                continue
            routes[model] = compiled
            revisions[model] = state.revision
            self._recovered(model, state.revision)
        self.routes, self.revisions = routes, revisions
        keep = {(m, v) for m, r in routes.items() for v in r.policy.all_versions()}
        if self.cache is not None:
            active = []
            for model, route in routes.items():
                for number in route.policy.all_versions():
                    served = self.pool.get(model, number)
                    if served is not None and route.policy.cache:
                        active.append(served.version.id)
            self.cache.set_active(active)
        await self.pool.retire(keep)
        self.ready = True
        return True

    async def _revisions(self, loop: asyncio.AbstractEventLoop) -> dict[str, int]:
        """The store's ``{model: revision}``, waited for at most ``poll_timeout_s``.

        A store that stopped answering (hung, or gone without a reset) holds one thread,
        never the loop: while that call is still out, no other is made (the threads it
        could pile up are the event loop's default pool), and each poll says so. That
        thread is this watcher's long-lived daemon, not one of the default pool's: a poll
        hung on a dead store must not hold the process at exit, where asyncio and then the
        interpreter join every pool thread with no time limit."""
        pending = self._poll
        if pending is None or pending.done():
            pending = self._poll = in_daemon_thread(loop, self.store.revisions, self._poller)
        try:
            return await asyncio.wait_for(asyncio.shield(pending), self.poll_timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"the store did not answer the route poll within {self.poll_timeout_s} s"
            ) from None

    def _failed(self, model: str, revision: int, exc: BaseException, serving: int | None) -> None:
        from conveyor.errors import ConveyorError

        message = exc.message if isinstance(exc, ConveyorError) else f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        known = self.failures.get(model)
        first = known is None or known.revision != revision
        failure = RouteFailure(
            model,
            revision,
            _reason_of(exc),
            message,
            now if known is None or first else known.since,
            now + self.retry_s,
            serving,
        )
        self.failures[model] = failure
        self.last_error = f"{model}: {message}"
        if first:
            log.error(
                "route of %s revision %s not applied (serving %s): %s",
                model,
                revision,
                "nothing" if serving is None else f"revision {serving}",
                message,
            )
            self._event(model, failure)
            if self.on_change is not None:
                self.on_change(model, failure)
        else:
            log.debug("route of %s revision %s still not loadable: %s", model, revision, message)

    def _recovered(self, model: str, revision: int | None) -> None:
        failure = self.failures.pop(model, None)
        if failure is None:
            return
        log.info("route of %s recovered (revision %s)", model, revision)
        if revision is not None:
            self._event(model, None, revision=revision, failed_for=time.monotonic() - failure.since)
        if self.on_change is not None:
            self.on_change(model, None)

    def _event(self, model: str, failure: RouteFailure | None, **applied: Any) -> None:
        from conveyor.serving.events import ROUTE_APPLIED, ROUTE_FAILED

        events = self.store.events
        if events is None:
            return
        worker = f"{os.uname().nodename}:{os.getpid()}"
        if failure is not None:
            events.record(
                ROUTE_FAILED,
                subject=model,
                payload={
                    "revision": failure.revision,
                    "serving_revision": failure.serving_revision,
                    "reason": failure.reason,
                    "message": failure.message,
                    "worker": worker,
                },
            )
        else:
            events.record(
                ROUTE_APPLIED,
                subject=model,
                payload={
                    "revision": applied["revision"],
                    "failed_for_s": round(applied["failed_for"], 3),
                    "worker": worker,
                },
            )

    def unavailable(self, model: str) -> Exception | None:
        """The 503 for a model whose live revision failed here and that has nothing
        older to serve; None when it is not degraded."""
        from conveyor.errors import ModelUnavailableError

        failure = self.failures.get(model)
        if failure is None:
            return None
        return ModelUnavailableError(
            f"model {model!r} cannot serve here: revision {failure.revision} of its route "
            f"failed to load ({failure.message})",
            model=model,
            reason=failure.reason,
            revision=failure.revision,
        )

    def health(self) -> dict[str, Any]:
        """The readiness body: ``ready`` only when every live revision is loaded and warm,
        and there is one: a server with nothing deployed is not ready (status ``empty``),
        since it could answer no prediction."""
        if self.ready and not self.routes and not self.failures:
            return {"ready": False, "status": "empty", "message": NOTHING_DEPLOYED}
        ready = self.ready and not self.failures
        status = "starting" if not self.ready else ("degraded" if self.failures else "ready")
        body: dict[str, Any] = {"ready": ready, "status": status}
        if self.failures:
            body["models"] = {m: f.to_dict() for m, f in sorted(self.failures.items())}
        return body

    async def start(self) -> None:
        """The first poll (the server is ready after it), then one every ``interval_s``, and
        one at once whenever the store announces a change (PostgreSQL)."""
        self._stopping = False
        await self.refresh()
        self._wake = asyncio.Event()
        dsn = self._listen_dsn()
        if dsn is not None:
            loop = asyncio.get_running_loop()
            wake = self._wake

            def notice(model: str | None, revision: int | None) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed while stopping
                    loop.call_soon_threadsafe(wake.set)

            self._notice = notice
            self.listener = subscribe(dsn, notice)
        self._task = asyncio.create_task(self._loop(), name="conveyor-route-watcher")

    def _listen_dsn(self) -> str | None:
        """The libpq DSN of the store when it is PostgreSQL and listening is on."""
        if not self.listen:
            return None
        if self.listen_dsn:
            return self.listen_dsn
        url = getattr(getattr(self.store, "store", None), "url", None)
        if url is None or url.scheme != "postgresql":
            return None
        rendered: str = url.with_(driver=None).render(hide_password=False)
        return rendered

    async def _loop(self) -> None:
        assert self._wake is not None
        # The flag, not only the cancellation, ends the loop: on Python 3.11 wait_for can
        # swallow a cancellation that lands as its inner wait completes, and the loop then
        # polled a closed store for ever while stop() waited on it (a test server's stop
        # was seen hanging 30 s, "route poll failed: ClosedError" every poll after).
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            try:
                await self.refresh()
                if not self.failures:
                    self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: keep serving the routes already loaded
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("route poll failed: %s", self.last_error)

    async def stop(self) -> None:
        self._stopping = True
        self._poller.close()  # its thread ends after a poll still out, never waited for
        if self.listener is not None:
            listener, self.listener = self.listener, None
            await asyncio.to_thread(unsubscribe, listener, self._notice)
        if self._task is not None:
            task, self._task = self._task, None
            if self._wake is not None:
                self._wake.set()
            task.cancel()
            # at most one poll's time: the loop ends at its next turn even when the
            # cancellation was swallowed
            done, _ = await asyncio.wait({task}, timeout=self.poll_timeout_s + 1)
            if not done:
                log.warning("the route watcher did not stop within %s s", self.poll_timeout_s + 1)
            elif not task.cancelled() and task.exception() is not None:
                log.warning("the route watcher ended with %r", task.exception())
