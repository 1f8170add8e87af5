"""Model aliases as policy data in the store, changed without a restart.

::

    conveyor llm route set fast --to mini,llama --weight mini=3 --weight llama=1
    conveyor llm route set chat --to mini --rules '[{"when": {"tiers": ["gold"]}, "to": "smart"}]'
    conveyor llm route show [fast]
    conveyor llm route history fast
    conveyor llm route rollback fast        # the route it had before
    conveyor llm route delete fast          # back to the spec's gateway.models
    PUT /v1/llm/routes/fast  {"deployments": ["mini", "llama"], "weights": {"mini": 3},
                              "rules": [...], "reason": "...", "revision": 3}

The spec's ``gateway.models`` are the defaults; a stored route replaces its alias (or
adds one): its deployments in fallback order, weights and rules
(:mod:`conveyor.gateway.rules`). Routes are pointers
(:class:`~conveyor.store.pointers.PointerTable`, as the model server's routes and the
registry's aliases): each change is checked against the spec's deployments and aliases,
numbered (``revision``: a change may be made conditional on the revision read, a stale
one refused with 409), appended to the route's history in the same transaction, and an
audit event (``llm.route_set``, ``llm.route_deleted``) with the actor and the route it
replaced.

How a change reaches every server, as for the model server's routes: on PostgreSQL the
transaction that writes it sends ``NOTIFY conveyor_routes`` (the model server's channel,
the alias as ``llm:ALIAS``), and each server's gateway listens and reads the routes at
once; every server also reads them every ``gateway.routes_poll_s`` (2 s; the only way on
SQLite, and the fallback for a notice missed). The swap is atomic: the calls under way
finish as they started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.gateway.events import LLM_ROUTE_DELETED, LLM_ROUTE_SET
from conveyor.store.pointers import Change, Key, Moved, PointerTable, Previous

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from conveyor.events.log import EventLog
    from conveyor.gateway.settings import GatewaySpec
    from conveyor.gateway.tables import LlmRouteHistoryRecord, LlmRouteRecord
    from conveyor.store.database import MetadataStore

__all__ = ["NOTICE_PREFIX", "LlmRoutes", "follow", "with_routes"]

#: How an LLM alias is named in a route notice (the model server's are bare names).
NOTICE_PREFIX = "llm:"

#: A route's value: ``{deployments, weights, rules}``.
Route = dict[str, Any]


def _announce(session: Session, alias: str, revision: int | None) -> None:
    """``NOTIFY`` the change in the session's transaction (PostgreSQL only; on SQLite
    servers poll)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    import sqlalchemy as sa

    from conveyor.serving.route_store import ROUTES_CHANNEL

    rest = f"\t{NOTICE_PREFIX}{alias}\t{'' if revision is None else revision}"
    session.execute(
        sa.text("SELECT pg_notify(:channel, current_schema() || :rest)"),
        {"channel": ROUTES_CHANNEL, "rest": rest},
    )


class _Pointers(PointerTable[Route]):
    """Aliases as pointers in ``llm_routes`` / ``llm_route_history``; the token is the
    route's ``revision``."""

    key_columns = ("alias",)
    newest_first = ("revision",)

    def __init__(self, store: MetadataStore) -> None:
        from conveyor.gateway.tables import LlmRouteHistoryRecord, LlmRouteRecord

        super().__init__(store, LlmRouteRecord, LlmRouteHistoryRecord)

    def describe(self, key: Key) -> str:
        return f"the stored route of {key[0]!r}"

    def missing(self, key: Key) -> NotFoundError:
        return NotFoundError(f"no stored route for {key[0]!r}", alias=key[0])

    def token(self, head: LlmRouteRecord) -> int:
        return head.revision

    def value(self, head: LlmRouteRecord) -> Route:
        return {
            "deployments": list(head.deployments),
            "weights": dict(head.weights),
            "rules": list(head.rules),
        }

    def write(
        self, session: Session, key: Key, head: LlmRouteRecord | None, change: Change[Route]
    ) -> LlmRouteRecord:
        if head is None:
            import sqlalchemy as sa

            # After a delete the history remains: continue its numbering.
            last = session.scalar(
                sa.select(sa.func.max(self.history.revision)).where(self.history.alias == key[0])
            )
            head = self.head(alias=key[0], revision=(last or 0) + 1)
            session.add(head)
        else:
            head.revision += 1
        route = change.after
        head.deployments = list(route["deployments"])
        head.weights = dict(route["weights"])
        head.rules = list(route["rules"])
        head.actor = change.actor
        head.reason = change.reason
        head.updated_at = change.at
        _announce(session, key[0], head.revision)
        return head

    def remove(self, key: Key) -> Any:
        """Delete the live route (its history stays) and announce it, in one transaction."""
        with self.store.session() as session:
            head = self._head(session, key)
            if head is None:
                raise self.missing(key)
            session.delete(head)
            _announce(session, key[0], None)
            return head

    def record(self, head: LlmRouteRecord, change: Change[Route]) -> LlmRouteHistoryRecord:
        entry: LlmRouteHistoryRecord = self.history(
            alias=head.alias,
            revision=head.revision,
            deployments=list(head.deployments),
            weights=dict(head.weights),
            rules=list(head.rules),
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )
        return entry

    def previous(self, session: Session, key: Key, head: LlmRouteRecord) -> Previous[Route]:
        import sqlalchemy as sa

        entry = session.scalars(
            sa.select(self.history)
            .where(self.history.alias == key[0], self.history.revision < head.revision)
            .order_by(self.history.revision.desc())
            .limit(1)
        ).first()
        if entry is None:
            raise InvalidInputError(
                f"the route of {key[0]!r} has no earlier revision to roll back to "
                "(delete it to go back to the spec's)",
                field="alias",
            )
        return Previous(
            {
                "deployments": list(entry.deployments),
                "weights": dict(entry.weights),
                "rules": list(entry.rules),
            },
            f"rollback to revision {entry.revision}",
            entry,
        )


def _row(record: Any) -> dict[str, Any]:
    return {
        "alias": record.alias,
        "revision": record.revision,
        "deployments": list(record.deployments),
        "weights": dict(record.weights),
        "rules": list(record.rules),
        "actor": record.actor,
        "reason": record.reason,
        "updated_at": (getattr(record, "updated_at", None) or record.at).isoformat(),
    }


class LlmRoutes:
    """The stored routes (see the module)."""

    def __init__(self, store: MetadataStore, events: EventLog | None = None) -> None:
        self.store = store
        self.events = events
        self._pointers = _Pointers(store)

    def all(self) -> dict[str, dict[str, Any]]:
        """Every stored route, by alias."""
        import sqlalchemy as sa

        from conveyor.gateway.tables import LlmRouteRecord

        with self.store.read() as session:
            rows = session.scalars(sa.select(LlmRouteRecord).order_by(LlmRouteRecord.alias))
            return {r.alias: _row(r) for r in rows}

    def get(self, alias: str) -> dict[str, Any]:
        """``alias``'s stored route (NotFoundError when it has none)."""
        return _row(self._pointers.get((alias,)))

    def history(self, alias: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The routes ``alias`` has had, newest first (deleted ones included)."""
        return [_row(e) for e in self._pointers.entries(limit=limit, alias=alias)]

    def set(
        self,
        spec: GatewaySpec,
        alias: str,
        deployments: list[str],
        weights: dict[str, float] | None = None,
        rules: list[dict[str, Any]] | None = None,
        *,
        actor: str | None = None,
        reason: str | None = None,
        expected: int | None = None,
    ) -> dict[str, Any]:
        """Route ``alias`` to ``deployments`` (fallback order) with ``weights`` and
        ``rules``; the route. ``expected``: only if the route is at that revision (0: only
        if it has none), else ConcurrentUpdateError."""
        value = self._checked(spec, alias, deployments, weights or {}, rules or [])
        moved = self._pointers.move((alias,), value, expected=expected, actor=actor, reason=reason)
        return self._audit(alias, moved, actor)

    def rollback(
        self, alias: str, *, actor: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        """Give ``alias`` the route it had before its last change (a new revision)."""
        moved, _ = self._pointers.rollback((alias,), actor=actor, reason=reason)
        return self._audit(alias, moved, actor)

    def delete(self, alias: str, *, actor: str | None = None) -> dict[str, Any]:
        """Delete ``alias``'s stored route: the spec's is used again (or none); the route."""
        previous = _row(self._pointers.remove((alias,)))
        if self.events is not None:
            self.events.record(
                LLM_ROUTE_DELETED,
                subject=alias,
                payload={"alias": alias, "previous": previous},
                actor=actor,
            )
        return previous

    def _checked(
        self,
        spec: GatewaySpec,
        alias: str,
        deployments: list[str],
        weights: dict[str, float],
        rules: list[dict[str, Any]],
    ) -> Route:
        from pydantic import ValidationError

        from conveyor.gateway.rules import check_rules
        from conveyor.gateway.settings import ModelSpec, check_route

        try:
            model = ModelSpec(deployments=deployments, weights=weights, rules=rules)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "deployments"
            message = error["msg"].removeprefix("Value error, ")
            raise InvalidInputError(f"route {alias!r}: {where}: {message}", field=where) from None
        check_route(spec, alias, model)
        aliases = {**spec.models, **self.all(), alias: model}
        wrong = check_rules(alias, model.rules, aliases, spec.deployments)
        if wrong is not None:
            raise InvalidInputError(wrong, field="rules")
        return {
            "deployments": list(model.deployments),
            "weights": dict(model.weights),
            "rules": [r.model_dump(exclude_defaults=True) for r in model.rules],
        }

    def _audit(self, alias: str, moved: Moved, actor: str | None) -> dict[str, Any]:
        """The route ``moved`` left, its change recorded (``llm.route_set``)."""
        route = _row(moved.head)
        previous = None if moved.before is None else _row(_Columns(moved.before))
        if self.events is not None:
            self.events.record(
                LLM_ROUTE_SET,
                subject=alias,
                payload={
                    "alias": alias,
                    "revision": route["revision"],
                    "deployments": route["deployments"],
                    "weights": route["weights"],
                    "rules": route["rules"],
                    "reason": route["reason"],
                    "previous": previous,
                },
                actor=actor,
            )
        return route


class _Columns:
    """A row's columns, read before a change (:class:`~conveyor.store.pointers.Moved`),
    as attributes."""

    def __init__(self, columns: Any) -> None:
        self.__dict__.update(columns)


def with_routes(spec: GatewaySpec, routes: dict[str, dict[str, Any]]) -> GatewaySpec:
    """The spec with the stored routes over its ``models`` (a route naming a deployment
    or an alias the spec no longer has is left out, and logged)."""
    import logging

    from pydantic import ValidationError

    from conveyor.gateway.rules import check_rules
    from conveyor.gateway.settings import ModelSpec

    log = logging.getLogger("conveyor.gateway")
    models = dict(spec.models)
    for alias, route in routes.items():
        if not all(d in spec.deployments for d in route["deployments"]):
            log.warning("stored route %s names a deployment the spec lacks: ignored", alias)
            continue
        try:
            models[alias] = ModelSpec(
                deployments=route["deployments"],
                weights=route["weights"],
                rules=route.get("rules") or [],
            )
        except ValidationError as exc:
            log.warning("stored route %s is not valid: ignored (%s)", alias, exc.errors()[0]["msg"])
    for alias in routes:
        model = models.get(alias)
        if model is not None and model.rules:
            wrong = check_rules(alias, model.rules, models, spec.deployments)
            if wrong is not None:  # compile_rules leaves such a rule out
                log.warning("stored route: %s", wrong)
    return spec.model_copy(update={"models": models})


async def follow(project: Any, spec: GatewaySpec, apply: Callable[[GatewaySpec], None]) -> None:
    """``apply(the spec with the store's routes over it)`` now and whenever they change:
    read every ``spec.routes_poll_s``, and at once on a notice (PostgreSQL: the model
    server's listener, on ``serving.listen_url`` or the store's URL). Runs until
    cancelled; a store away keeps the routing as it was."""
    import asyncio
    import contextlib
    import logging

    log = logging.getLogger("conveyor.gateway")
    routes = LlmRoutes(project.store)
    wake = asyncio.Event()
    listening = _listen(project, wake)
    last: dict[str, Any] | None = None
    try:
        while True:
            wake.clear()
            try:
                found = await asyncio.to_thread(routes.all)
                if found != last:
                    apply(with_routes(spec, found))
                    if last is not None or found:
                        log.info("LLM routes from the store: %s", ", ".join(found) or "none")
                    last = found
            except Exception as exc:  # the store away: keep routing as before
                log.warning("reading the LLM routes failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), spec.routes_poll_s)
    finally:
        if listening is not None:
            from conveyor.serving.watcher import unsubscribe

            await asyncio.to_thread(unsubscribe, *listening)


def _listen(project: Any, wake: Any) -> Any:
    """The process's route listener (:func:`~conveyor.serving.watcher.subscribe`, shared
    with the model routes') and the callback setting ``wake`` on an LLM route's notice
    (None: the store is not PostgreSQL)."""
    import asyncio
    import contextlib

    url = project.store.url
    if url.scheme != "postgresql":
        return None
    from conveyor.serving.settings import serving_of
    from conveyor.serving.watcher import subscribe

    listen = serving_of(project.spec).listen_url
    dsn = (listen or url).with_(driver=None).render(False)
    loop = asyncio.get_running_loop()

    def notice(model: str | None, revision: int | None) -> None:
        if model is None or model.startswith(NOTICE_PREFIX):
            with contextlib.suppress(RuntimeError):  # the loop closed while stopping
                loop.call_soon_threadsafe(wake.set)

    return subscribe(dsn, notice), notice
