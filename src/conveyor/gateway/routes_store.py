"""Model aliases as policy data in the store, changed without a restart.

::

    conveyor llm route set fast --to mini,llama --weight mini=3 --weight llama=1
    conveyor llm route show
    conveyor llm route delete fast          # back to the spec's gateway.models
    PUT /v1/llm/routes/fast  {"deployments": ["mini", "llama"], "weights": {"mini": 3}}

The spec's ``gateway.models`` are the defaults; a stored route replaces its alias (or
adds one). Each change is checked against the spec's deployments, bumps the route's
version, and is an audit event (``llm.route_set``, ``llm.route_deleted``) with the actor
and the route it replaced. Every server polls the table (one small SELECT every
``gateway.routes_poll_s``, 2 s by default) and swaps its routing when it changed: the
calls under way finish as they started.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.gateway.events import LLM_ROUTE_DELETED, LLM_ROUTE_SET
from conveyor.gateway.tables import LlmRouteRecord

if TYPE_CHECKING:
    from conveyor.events.log import EventLog
    from conveyor.gateway.settings import GatewaySpec
    from conveyor.store.database import MetadataStore

__all__ = ["LlmRoutes", "with_routes"]


def _row(record: LlmRouteRecord) -> dict[str, Any]:
    return {
        "alias": record.alias,
        "deployments": list(record.deployments),
        "weights": dict(record.weights),
        "version": record.version,
        "actor": record.actor,
        "updated_at": record.updated_at.isoformat(),
    }


class LlmRoutes:
    """The stored routes (see the module)."""

    def __init__(self, store: MetadataStore, events: EventLog | None = None) -> None:
        self.store = store
        self.events = events

    def all(self) -> dict[str, dict[str, Any]]:
        with self.store.read() as session:
            rows = session.scalars(sa.select(LlmRouteRecord).order_by(LlmRouteRecord.alias))
            return {r.alias: _row(r) for r in rows}

    def set(
        self,
        spec: GatewaySpec,
        alias: str,
        deployments: list[str],
        weights: dict[str, float] | None = None,
        *,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Route ``alias`` to ``deployments`` (fallback order) with ``weights``; the route."""
        from pydantic import ValidationError

        from conveyor.gateway.settings import ModelSpec, check_route

        try:
            model = ModelSpec(deployments=deployments, weights=weights or {})
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise InvalidInputError(f"route {alias!r}: {message}", field="deployments") from None
        check_route(spec, alias, model)
        now = datetime.now(UTC)
        with self.store.session() as session:
            found = session.get(LlmRouteRecord, alias)
            previous = _row(found) if found is not None else None
            if found is None:
                found = LlmRouteRecord(alias=alias, version=0)
                session.add(found)
            found.deployments = list(model.deployments)
            found.weights = dict(model.weights)
            found.version += 1
            found.actor = actor
            found.updated_at = now
            session.flush()
            route = _row(found)
        if self.events is not None:
            self.events.record(
                LLM_ROUTE_SET,
                subject=alias,
                payload={
                    "alias": alias,
                    "deployments": route["deployments"],
                    "weights": route["weights"],
                    "previous": previous,
                },
                actor=actor,
            )
        return route

    def delete(self, alias: str, *, actor: str | None = None) -> dict[str, Any]:
        with self.store.session() as session:
            found = session.get(LlmRouteRecord, alias)
            if found is None:
                raise NotFoundError(f"no stored route for {alias!r}", alias=alias)
            previous = _row(found)
            session.delete(found)
        if self.events is not None:
            self.events.record(
                LLM_ROUTE_DELETED,
                subject=alias,
                payload={"alias": alias, "previous": previous},
                actor=actor,
            )
        return previous


def with_routes(spec: GatewaySpec, routes: dict[str, dict[str, Any]]) -> GatewaySpec:
    """The spec with the stored routes over its ``models`` (a route naming a deployment
    the spec no longer has is left out, and logged)."""
    import logging

    from conveyor.gateway.settings import ModelSpec

    models = dict(spec.models)
    for alias, route in routes.items():
        if not all(d in spec.deployments for d in route["deployments"]):
            logging.getLogger("conveyor.gateway").warning(
                "stored route %s names a deployment the spec lacks: ignored", alias
            )
            continue
        models[alias] = ModelSpec(deployments=route["deployments"], weights=route["weights"])
    return spec.model_copy(update={"models": models})
