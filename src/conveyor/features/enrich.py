"""Serving by entity key: a model trained on a feature service gets its features online.

The features capability contributes :func:`enricher` to the model server's ``enrich``
seam. For a version whose lineage names a feature service (``inputs`` in the
registry: see :mod:`conveyor.features.lineage`), each request row carries the
service's join keys (and the request fields its on-demand features read); before
the signature check, the service's features are read from the online store in one
round trip, the on-demand ones computed by the same function as offline, and the
columns the version was trained on are set from them. A value the request carries
under a feature's name is replaced: the store is the one source of a feature.

The prediction event's ``features`` field records, per row, the values used and the
names that were missing or expired::

    {"service": "fraud", "version": 2,
     "rows": [{"keys": {"customer_id": 42}, "values": {...},
               "missing": ["amount_mean_1h"], "expired": [],
               "zero": ["amount_count_1h"]}]}

A count or sum of an entity with no record online (one never seen) is 0, as the
training frame gives an entity without rows, and is listed under ``zero``; any other
feature that is missing or expired reads as null; a version trained without nulls in
that column refuses the row (422 ``invalid_input`` naming the feature, the key and why
it had no value), as the signature check refuses bad input. A row without a join key
is refused the same way, naming the key; an online store that does not answer
is a 503 (``backend_unavailable``), never a row of nulls. Versions trained on their
data set's own columns pass through untouched (one attribute test per request).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.errors import InvalidInputError
from conveyor.serving.dense import as_arrow

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.project import Project
    from conveyor.registry.versions import ModelVersion
    from conveyor.serving.app import Enrich, Enriched
    from conveyor.web.app import AppContext, Contribution
    from conveyor.web.dependencies import Dependencies

__all__ = ["Plan", "enricher", "lookup", "plan_for", "routes"]


@dataclass(frozen=True, slots=True)
class Plan:
    """How one version's requests are enriched."""

    service: str
    version: int | None
    keys: tuple[str, ...]  # every join key the service's views read
    features: tuple[str, ...]  # the service's features the version was trained on
    #: Request columns only the lookup reads (join keys, on-demand inputs): dropped once
    #: used, so the signature check sees the version's inputs.
    consumed: tuple[str, ...] = ()
    #: Counts and sums, which the training frame gives an entity without rows as 0: an
    #: entity with no record online (never seen) gets the same 0, not a null.
    zero_when_missing: frozenset[str] = frozenset()


def plan_for(project: Project, version: ModelVersion) -> Plan | None:
    """The enrichment of ``version``: None unless it was trained on a feature service."""
    from conveyor.features.settings import features_of

    used = next((i for i in version.inputs if i.get("kind") == "feature_service"), None)
    if used is None:
        return None
    spec = features_of(project.spec)
    service = str(used["name"])
    if service not in spec.services:
        raise InvalidInputError(
            f"{version.ref} was trained on feature service {service!r}, which conveyor.yaml "
            "no longer declares: it cannot be served by entity key",
            service=service,
        )
    keys: dict[str, None] = {}
    for view in used.get("views") or {}:
        for entity in spec.views[view].entities if view in spec.views else ():
            keys.update(dict.fromkeys(spec.entities[entity].join_keys))
    wanted = list(used.get("features") or [])
    request = [
        field
        for ref in spec.services[service].features
        if ref in spec.on_demand
        for field in spec.on_demand[ref].inputs
        if ":" not in field
    ]
    consumed = list(dict.fromkeys([*keys, *request]))
    zeros = {
        name
        for view in used.get("views") or {}
        if view in spec.views
        for aggregate in spec.views[view].aggregates
        for fn in aggregate.functions
        if fn in ("count", "sum")
        for name in aggregate.model_copy(update={"functions": [fn]}).feature_names()
    }
    if version.signature:
        inputs = {c["name"] for c in version.signature.get("inputs", [])}
        wanted = [f for f in wanted if f in inputs]
        consumed = [c for c in consumed if c not in inputs]
    return Plan(
        service,
        used.get("version"),
        tuple(keys),
        tuple(wanted),
        tuple(consumed),
        frozenset(zeros & set(wanted)),
    )


def lookup(project: Project, plan: Plan, version: ModelVersion, table: pa.Table) -> Enriched:
    """``table`` with the plan's features from the online store (blocking: run in a thread)."""
    import pyarrow as pa

    from conveyor.features.materialize import online_features
    from conveyor.serving.app import Enriched

    missing_keys = [k for k in plan.keys if k not in table.column_names]
    if missing_keys:
        raise InvalidInputError(
            f"{version.ref} is served by entity key: each row needs "
            f"{', '.join(plan.keys)} (missing: {', '.join(missing_keys)})",
            field=missing_keys[0],
        )
    rows = table.to_pylist()
    found = online_features(project, rows, plan.service)
    nullable = {
        c["name"]: c.get("nullable", True) for c in (version.signature or {}).get("inputs", [])
    }
    recorded = []
    for i, (row, got) in enumerate(zip(rows, found, strict=True)):
        status = got["status"]
        absent = {f: s for f in plan.features if (s := status.get(f)) in ("missing", "expired")}
        zeroed = []
        for feature in plan.zero_when_missing:
            if absent.get(feature) == "missing":  # no record: no row of this entity yet
                got["features"][feature] = 0
                del absent[feature]
                zeroed.append(feature)
        for feature, why in absent.items():
            if not nullable.get(feature, True):
                key = ", ".join(f"{k}={row.get(k)!r}" for k in plan.keys)
                raise InvalidInputError(
                    f"feature {feature!r} is {why} online for {key} (row {i}) and "
                    f"{version.ref} was trained without nulls in it: materialize or push "
                    "the feature, or train on rows with gaps",
                    field=feature,
                    row=i,
                    status=why,
                )
        recorded.append(
            {
                # The join keys, so feedback can name the prediction by key and time.
                "keys": {k: row.get(k) for k in plan.keys},
                "values": {f: got["features"].get(f) for f in plan.features},
                "missing": [f for f, s in absent.items() if s == "missing"],
                "expired": [f for f, s in absent.items() if s == "expired"],
                "zero": sorted(zeroed),
            }
        )
    for feature in plan.features:
        column = pa.array([got["features"].get(feature) for got in found])
        if feature in table.column_names:
            table = table.set_column(table.column_names.index(feature), feature, column)
        else:
            table = table.append_column(feature, column)
    dropped = [c for c in plan.consumed if c in table.column_names]
    if dropped:
        table = table.drop_columns(dropped)
    record = {"service": plan.service, "version": plan.version, "rows": recorded}
    return Enriched(table, record)


def enricher(project: Project, dependencies: Dependencies | None = None) -> Enrich:
    """The model server's enricher for ``project``: see the module docstring. With
    ``dependencies``, the online store is called under its breaker and timeout."""
    plans: dict[str, Plan | None] = {}

    async def enrich(model: str, version: ModelVersion, table: pa.Table) -> pa.Table | Enriched:
        if not version.inputs:
            return table
        plan = plans.get(version.id, ...)
        if plan is ...:
            plan = plans[version.id] = plan_for(project, version)
        if plan is None:
            return table
        table = as_arrow(table)  # the lookup joins Arrow tables (serving/dense.py)
        if dependencies is None:
            return await asyncio.to_thread(lookup, project, plan, version, table)
        return await dependencies.call(
            "online", dependencies.limits.store_timeout_s, lookup, project, plan, version, table
        )

    return enrich


def routes(context: AppContext) -> Contribution:
    """The features capability's part of an app: its HTTP routes and the enricher."""
    from dataclasses import replace

    from conveyor.features.http import routes as http_routes

    part = http_routes(context)
    return replace(part, enrich=enricher(context.project, context.dependencies))
