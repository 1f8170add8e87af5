"""Routes as data: every worker polls the store and switches only to loaded versions.

Each poll is one small SELECT of ``(model, revision)`` (run in a thread).
When a revision changed, the worker reads the new policy, loads and warms
every version it names (serving, shadow and flag versions) *before*
swapping the compiled route in, so requests never meet an unloaded
version: a rollback takes effect within one poll plus a load, and fails
nothing. The cache's set of reachable versions follows the routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.serving.cache import PredictionCache
    from conveyor.serving.pool import ModelPool
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import CompiledRoute

__all__ = ["RouteWatcher"]

log = logging.getLogger("conveyor.serving")


class RouteWatcher:
    """The live compiled routes of this worker, kept in step with the store."""

    def __init__(
        self,
        routes: RouteStore,
        pool: ModelPool,
        *,
        cache: PredictionCache | None = None,
        interval_s: float = 0.5,
    ) -> None:
        self.store = routes
        self.pool = pool
        self.cache = cache
        self.interval_s = interval_s
        #: model -> compiled route; replaced whole, so readers never see half a change.
        self.routes: dict[str, CompiledRoute] = {}
        self.revisions: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.ready = False
        self.last_error: str | None = None

    async def refresh(self) -> bool:
        """One poll; True when something changed. Load errors keep the old route."""
        loop = asyncio.get_running_loop()
        current = await loop.run_in_executor(None, self.store.revisions)
        changed = {m for m, r in current.items() if self.revisions.get(m) != r}
        removed = set(self.revisions) - set(current)
        if not changed and not removed:
            self.ready = True
            return False
        routes = dict(self.routes)
        revisions = dict(self.revisions)
        for model in removed:
            routes.pop(model, None)
            revisions.pop(model, None)
        for model in sorted(changed):
            try:
                state = await loop.run_in_executor(None, self.store.get, model)
                compiled = state.policy.compiled()
                await asyncio.gather(
                    *(self.pool.ensure(model, v) for v in state.policy.all_versions())
                )
            except Exception as exc:  # a bad version must not take the other routes down
                self.last_error = f"{model}: {type(exc).__name__}: {exc}"
                log.error("route of %s not applied: %s", model, self.last_error)
                continue
            routes[model] = compiled
            revisions[model] = state.revision
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

    async def start(self) -> None:
        """The first poll (the server is ready after it), then one every ``interval_s``."""
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="conveyor-route-watcher")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
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
