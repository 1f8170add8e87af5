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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.serving.cache import PredictionCache
    from conveyor.serving.pool import ModelPool
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import CompiledRoute

__all__ = ["NOTHING_DEPLOYED", "RouteFailure", "RouteWatcher"]

log = logging.getLogger("conveyor.serving")


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
    ) -> None:
        self.store = routes
        self.pool = pool
        self.cache = cache
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
        self.ready = False
        self.last_error: str | None = None

    @property
    def degraded(self) -> bool:
        return bool(self.failures)

    async def refresh(self) -> bool:
        """One poll; True when something changed. Load errors keep the old route."""
        loop = asyncio.get_running_loop()
        current = await loop.run_in_executor(None, self.store.revisions)
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
        """The first poll (the server is ready after it), then one every ``interval_s``."""
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="conveyor-route-watcher")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
