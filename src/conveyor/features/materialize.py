"""The online side of the definitions: materialization, online reads and parity.

- :func:`materialize` writes each view's latest row per entity to the online store
  (``backends.online``), and each view's aggregates as of now, computed by the same
  point-in-time code as the training frame (they are stored under ``<view>@aggregates``
  with that moment as their event time: materialize again to move them forward);
- :func:`online_features` reads a service's features for entity keys in one round trip
  and computes its on-demand features from them and the request, by the same function
  as offline; each value has a status (present, missing, expired) and an event time;
- :func:`parity` samples entity keys and compares the online values with what the
  offline path computes for now: every mismatch is a failing check in a saved report.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.checks.result import Report
    from conveyor.features.online import OnlineStore
    from conveyor.features.settings import FeaturesSpec, ViewSpec
    from conveyor.project import Project

__all__ = ["Materialized", "materialize", "online_features", "online_store", "parity"]

AGGREGATES_SUFFIX = "@aggregates"
#: The column holding the moment aggregates were computed for, when they are written.
_AS_OF = "__as_of"


@dataclass(frozen=True, slots=True)
class Materialized:
    """What materializing one view wrote."""

    view: str
    rows: int
    entities: int
    written: int
    kept: int
    expired: int
    aggregates: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "rows": self.rows,
            "entities": self.entities,
            "written": self.written,
            "kept": self.kept,
            "expired": self.expired,
            "aggregates": self.aggregates,
        }


def online_store(project: Project) -> OnlineStore:
    """The project's online store, over its ``online`` seam."""
    from conveyor.features.online import OnlineStore

    return OnlineStore(project.backend("online"))


def _keys(spec: FeaturesSpec, view: ViewSpec) -> tuple[str, ...]:
    return tuple(dict.fromkeys(k for e in view.entities for k in spec.entities[e].join_keys))


def materialize(
    project: Project,
    views: Sequence[str] | None = None,
    *,
    now: datetime | None = None,
    actor: str = "features",
) -> list[Materialized]:
    """Write ``views`` (default: every view) to the online store: the latest row per entity
    (a newer row already stored is kept), and the aggregates as of ``now``."""
    import pyarrow as pa

    from conveyor.errors import NotFoundError
    from conveyor.features.retrieval import view_aggregates
    from conveyor.features.settings import features_of
    from conveyor.features.sources import view_table

    spec = features_of(project.spec)
    names = list(views) if views else list(spec.views)
    for name in names:
        if name not in spec.views:
            raise NotFoundError(
                f"no feature view {name!r}; declared: {', '.join(sorted(spec.views)) or 'none'}",
                view=name,
            )
    moment = now or datetime.now(UTC)
    store = online_store(project)
    done = []
    for name in names:
        view = spec.views[name]
        keys = _keys(spec, view)
        rows = view_table(project, name, view, actor=actor)
        written = (
            store.write(
                name,
                rows,
                join_keys=keys,
                event_time=view.event_time,
                features=[f.name for f in view.features],
                created_time=view.created_time,
                ttl=view.ttl,
                types={f.name: f.type for f in view.features},
            )
            if view.features
            else None
        )
        aggregated = 0
        if view.aggregates:
            entity = rows.select(list(keys)).group_by(list(keys)).aggregate([])
            entity = entity.append_column(
                "event_timestamp", pa.array([moment] * entity.num_rows, pa.timestamp("us", "UTC"))
            )
            table = entity
            computed = view_aggregates(entity, view, rows, keys)
            for feature, column in computed.items():
                table = table.append_column(feature, column)
            names_out = list(computed)
            table = table.append_column(_AS_OF, table.column("event_timestamp"))
            store.write(
                name + AGGREGATES_SUFFIX,
                table,
                join_keys=keys,
                event_time=_AS_OF,
                features=names_out,
                ttl=view.ttl,
            )
            aggregated = table.num_rows
        done.append(
            Materialized(
                name,
                rows.num_rows,
                written.keys if written else aggregated,
                written.written if written else 0,
                written.kept if written else 0,
                written.expired if written else 0,
                aggregated,
            )
        )
    return done


# The read path lives in its own module (plans cached per project); re-exported here.
from conveyor.features.serving_read import online_features  # noqa: E402


def parity(
    project: Project,
    service: str,
    *,
    sample: int = 100,
    seed: int = 0,
    now: datetime | None = None,
    actor: str = "features",
) -> Report:
    """Compare, for up to ``sample`` entity keys, the online values of ``service`` with what
    the offline path computes for ``now``; one failing check per mismatch (the key, the
    feature and both values), saved as a report."""
    import pyarrow as pa

    from conveyor.checks.persist import save_report
    from conveyor.checks.result import CheckResult, Report
    from conveyor.features.retrieval import requested_features
    from conveyor.features.settings import features_of
    from conveyor.features.sources import view_table

    spec = features_of(project.spec)
    pairs = requested_features(spec, service)
    owners = sorted({o for o, _ in pairs if o in spec.views})
    keys_seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    key_names: tuple[str, ...] = ()
    for owner in owners:
        view = spec.views[owner]
        key_names = _keys(spec, view)
        rows = view_table(project, owner, view, actor=actor).select(list(key_names))
        for row in rows.to_pylist():
            keys_seen.setdefault(tuple(row[k] for k in key_names), row)
    found = list(keys_seen.values())
    chosen = random.Random(seed).sample(found, min(sample, len(found)))
    moment = now or datetime.now(UTC)
    checks: list[CheckResult] = []
    compared = 0
    wanted = [f for o, f in pairs if o in spec.views]
    if chosen:
        entity = pa.Table.from_pylist(chosen).append_column(
            "event_timestamp", pa.array([moment] * len(chosen), pa.timestamp("us", "UTC"))
        )
        offline_rows = project.features.training_frame(
            entity, [f"{o}:{f}" for o, f in pairs if o in spec.views], actor=actor
        ).to_pylist()
        online_rows = online_features(
            project, chosen, [f"{o}:{f}" for o, f in pairs if o in spec.views], now=moment
        )
        for key, off, on in zip(chosen, offline_rows, online_rows, strict=True):
            for feature in wanted:
                compared += 1
                a, b = on["features"].get(feature), off.get(feature)
                if not _same(a, b):
                    checks.append(
                        CheckResult(
                            f"parity.{feature}",
                            False,
                            observed={"key": key, "online": a, "offline": b},
                            detail=f"{feature} for {key}: online {a!r}, offline {b!r}",
                        )
                    )
    checks.append(
        CheckResult(
            "parity",
            not checks,
            observed={"entities": len(chosen), "values": compared, "mismatches": len(checks)},
            threshold={"mismatches": 0},
            detail=f"{compared} values of {len(chosen)} entities compared, {len(checks)} differ",
        )
    )
    report = Report.of(f"features:{service}", checks, kind="parity")
    save_report(project.store, report)
    return report


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return bool(a == b)
