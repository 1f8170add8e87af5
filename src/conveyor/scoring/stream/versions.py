"""Which version scores a message: the server's route, read from the store and refreshed.

``MODEL`` alone follows the model's route (``conveyor route set``) exactly as the
server does: each message is decided by :func:`conveyor.serving.routes.decide` with
its entity key as the sticky key (canary weights, flags, A-B arms), and its shadow
versions score it too, compared with :func:`conveyor.serving.shadow.compare`. A model
without a route, or ``MODEL@N`` / ``MODEL@ALIAS``, is one version. Versions are loaded
by the server's verified loader (:func:`conveyor.serving.pool.load_verified`: the
artifact's sha256 checked, a warm-up prediction made) before a route naming them is
used; the route is read again every ``route_poll`` seconds, so a rollback reaches the
stream within about a second, as it reaches every server.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.errors import NotFoundError

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.registry.versions import LoadedModel, ModelVersion
    from conveyor.serving.routes import CompiledRoute

__all__ = ["Choice", "Versions"]

log = logging.getLogger("conveyor.scoring")


@dataclass(frozen=True, slots=True)
class Choice:
    version: int
    arm: str
    shadow: tuple[int, ...]


class Versions:
    """The model's route (or pinned version) and the versions loaded for it."""

    def __init__(
        self, project: Project, model: str, *, force: bool = False, route_poll: float = 1.0
    ) -> None:
        from conveyor.scoring.batch import _version
        from conveyor.serving.route_store import RouteStore

        self.project = project
        self.route_poll = route_poll
        name, at, _ = model.partition("@")
        self.model = name
        self._routes = RouteStore(project.store, project.events, project.registry, verify=False)
        self._route: CompiledRoute | None = None
        self._revision: int | None = None
        self._pinned: ModelVersion | None = None
        self._loaded: dict[int, LoadedModel] = {}
        self._checked = time.monotonic()
        self._force = force
        if at or not self._read_route():
            # a pinned version is checked as batch scoring checks it: gates, force
            self._pinned = _version(project, model, None, force=force)
            self.model = self._pinned.model
            self.loaded(self._pinned.number)

    @property
    def routed(self) -> bool:
        return self._pinned is None

    def _read_route(self) -> bool:
        try:
            state = self._routes.get(self.model)
        except NotFoundError:
            return False
        route = state.policy.compiled()
        for number in state.policy.all_versions():  # loaded before the route is used
            self.loaded(number)
        self._route, self._revision = route, state.revision
        return True

    def versions(self) -> list[int]:
        if self._pinned is not None:
            return [self._pinned.number]
        assert self._route is not None
        return list(self._route.policy.all_versions())

    def refresh(self) -> None:
        """Read the route again if ``route_poll`` seconds passed (a cheap poll first)."""
        if self._pinned is not None or time.monotonic() - self._checked < self.route_poll:
            return
        self._checked = time.monotonic()
        try:
            revision = self._routes.revisions().get(self.model)
            if revision is not None and revision != self._revision:
                before = self._revision
                self._read_route()
                log.warning(
                    "route of %s changed (revision %s -> %s): scoring with %s",
                    self.model,
                    before,
                    revision,
                    self.versions(),
                )
        except Exception as exc:  # the store is away: keep the last route (as servers do)
            log.warning("reading the route of %s failed, keeping the last one: %s", self.model, exc)

    def choose(self, key: str | None) -> Choice:
        if self._pinned is not None:
            return Choice(self._pinned.number, "pinned", ())
        assert self._route is not None
        decision = self._route.decide(
            model=self.model, key=key, attributes={}, rand=None if key else random.random()
        )
        return Choice(decision.version, decision.arm, decision.shadow)

    def loaded(self, number: int) -> LoadedModel:
        found = self._loaded.get(number)
        if found is None:
            from conveyor.serving.pool import load_verified

            found = load_verified(self.project.registry, self.model, number, warm_ups=1)[0]
            self._loaded[number] = found
        return found
