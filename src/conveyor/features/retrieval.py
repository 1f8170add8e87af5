"""Training frames from the spec's definitions: ``project.features.training_frame(...)``.

A service (or a list of ``view:feature`` references and on-demand names) becomes, for each
view, its rows after the transform (:func:`conveyor.features.sources.view_table`), joined
point in time by :mod:`conveyor.features.offline`: plain features as of each entity row
(TTL, created-time ties, "as known at"), aggregates over their windows, then the on-demand
features computed from the frame by the same function the server calls on a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.features.settings import FeaturesSpec, ViewSpec
    from conveyor.project import Project

__all__ = ["compute_on_demand", "requested_features", "training_frame", "view_aggregates"]


def requested_features(
    spec: FeaturesSpec, service_or_features: str | Sequence[str]
) -> list[tuple[str, str]]:
    """``(view or on-demand name, feature)`` pairs of a service, or of a list of references;
    NotFoundError naming an unknown service, view or feature."""
    if isinstance(service_or_features, str):
        service = spec.services.get(service_or_features)
        if service is None:
            raise NotFoundError(
                f"no feature service {service_or_features!r}; declared: "
                f"{', '.join(sorted(spec.services)) or 'none'}",
                service=service_or_features,
            )
        refs: Sequence[str] = service.features
    else:
        refs = service_or_features
    pairs: list[tuple[str, str]] = []
    for ref in refs:
        try:
            pairs += spec.resolve(ref, where="features")
        except ValueError as exc:
            raise NotFoundError(str(exc), feature=ref) from None
    return list(dict.fromkeys(pairs))


def training_frame(
    project: Project,
    entity: Any,
    service_or_features: str | Sequence[str],
    *,
    entity_time: str = "event_timestamp",
    as_known_at: bool = True,
    actor: str = "features",
) -> pa.Table:
    """``entity`` (Arrow or pandas: join keys and ``entity_time``) with the requested
    features as of each row's time; rows, order and duplicates kept, nulls where nothing
    was visible. Feature columns are named as in the definitions (``amount_sum_24h``)."""
    from conveyor.data.frames import to_arrow
    from conveyor.features import offline
    from conveyor.features.settings import features_of
    from conveyor.features.sources import view_table

    spec = features_of(project.spec)
    pairs = requested_features(spec, service_or_features)
    table = to_arrow(entity)
    names = [feature for _, feature in pairs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInputError(
            f"features {', '.join(repeated)} come from more than one view; ask for one of each",
            field="features",
        )
    views = {owner for owner, _ in pairs if owner in spec.views}
    width = table.num_columns
    for name in sorted(views):
        view = spec.views[name]
        wanted = [f for owner, f in pairs if owner == name]
        rows = view_table(project, name, view, actor=actor)
        keys = _join_keys(spec, view)
        plain = tuple(f.name for f in view.features if f.name in wanted)
        if plain:
            frame = offline.ViewFrame(
                name, rows, keys, view.event_time, plain, view.created_time, view.ttl
            )
            joined = offline.get_training_frame(
                table.select(list(range(width))),
                [frame],
                entity_time=entity_time,
                as_known_at=as_known_at,
                full_names=False,
            )
            for feature in plain:
                table = table.append_column(feature, joined.column(feature))
        aggregates = view_aggregates(
            table.select(list(range(width))),
            view,
            rows,
            keys,
            wanted,
            entity_time=entity_time,
            as_known_at=as_known_at,
        )
        for feature, column in aggregates.items():
            table = table.append_column(feature, column)
    return _on_demand(project, spec, table, pairs)


def _join_keys(spec: FeaturesSpec, view: ViewSpec) -> tuple[str, ...]:
    return tuple(dict.fromkeys(k for e in view.entities for k in spec.entities[e].join_keys))


def view_aggregates(
    entity: pa.Table,
    view: ViewSpec,
    rows: pa.Table,
    keys: tuple[str, ...],
    wanted: Sequence[str] | None = None,
    *,
    entity_time: str = "event_timestamp",
    as_known_at: bool = True,
) -> dict[str, pa.ChunkedArray]:
    """The view's aggregates (those in ``wanted``, default all) for each entity row, by
    their definition names (``amount_sum_24h``): the training frame's and materialization's
    one computation."""
    from conveyor.features import offline

    found: dict[str, pa.ChunkedArray] = {}
    for aggregate in view.aggregates:
        names = [n for n in aggregate.feature_names() if wanted is None or n in wanted]
        if not names:
            continue
        done = offline.aggregate_frame(
            entity,
            rows,
            join_keys=keys,
            event_time=view.event_time,
            column=aggregate.column,
            functions=aggregate.functions,
            windows=aggregate.windows,
            entity_time=entity_time,
            as_known_at=as_known_at,
            created_time=view.created_time,
        )
        for fn in aggregate.functions:
            for window in aggregate.windows:
                label = offline.window_label(window)
                name = f"{aggregate.column}_{fn}_{label}"
                if name in names:
                    found[name] = done.column(f"{aggregate.column}__{fn}__{label}")
    return found


def _on_demand(
    project: Project, spec: FeaturesSpec, table: pa.Table, pairs: list[tuple[str, str]]
) -> pa.Table:
    owners = list(dict.fromkeys(owner for owner, _ in pairs if owner in spec.on_demand))
    for owner in owners:
        table = compute_on_demand(project, owner, table)
        wanted = {f for o, f in pairs if o == owner}
        extra = [n for n in spec.on_demand[owner].outputs if n not in wanted]
        if extra:
            table = table.drop_columns(extra)
    return table


def compute_on_demand(project: Project, name: str, table: pa.Table) -> pa.Table:
    """``table`` with the outputs of on-demand feature ``name``: its function applied to its
    inputs (request fields or already-joined features), the same call offline and online."""
    from conveyor.data.frames import to_arrow
    from conveyor.features.settings import features_of
    from conveyor.user_code import load_entry_point

    demand = features_of(project.spec).on_demand[name]
    inputs = [ref.partition(":")[2] or ref for ref in demand.inputs]
    missing = [c for c in inputs if c not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"on-demand feature {name!r} needs {', '.join(missing)}, which the frame lacks",
            field=missing[0],
        )
    function = load_entry_point(demand.function, project.root, field="function")
    out = to_arrow(function(table.select(inputs)))
    for output in demand.outputs:
        if output not in out.column_names:
            raise InvalidInputError(
                f"on-demand feature {name!r}: {demand.function} returned no column {output!r}",
                field=output,
            )
        if out.num_rows != table.num_rows:
            raise InvalidInputError(
                f"on-demand feature {name!r}: {demand.function} returned {out.num_rows} rows "
                f"for {table.num_rows}",
                field=output,
            )
        table = table.append_column(output, out.column(output))
    return table
