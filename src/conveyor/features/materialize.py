"""The online side of the definitions: materialization, online reads and parity.

- :func:`materialize` writes each view's latest row per entity to the online store
  (``backends.online``), incrementally (the rows after the view's watermark) or in full,
  in chunks with a checkpoint after each, so a run that dies is continued where it
  stopped; and each view's aggregates as of now, computed by the same point-in-time
  code as the training frame (stored under ``<view>@aggregates`` with that moment as
  their event time: materialize again to move them forward);
- :func:`online_features` reads a service's features for entity keys in one round trip
  and computes its on-demand features from them and the request, by the same function
  as offline; each value has a status (present, missing, expired) and an event time;
- :func:`parity` samples entity keys and compares the online values with what the
  offline path computes for now: every mismatch is a failing check in a saved report.

**Incremental and full.** A row's *position* is its created time, or its event time
when the view has no created time (or the row's is null); see
:mod:`conveyor.features.watermark`. An incremental run writes the rows whose position
is after the view's watermark minus ``features.materialize.lateness`` (0 by default),
sorted by position, in chunks of ``chunk_rows``; the watermark then becomes the highest
position written. The first incremental run of a view, and the first after its
definition changed, is full. A full run writes every row and resets the watermark.

A row that arrives late with a position at or before the watermark minus the lateness
is not written by an incremental run: the next full run writes it (the online store
keeps whichever row is newer by event time, so writing it is always safe). With a
created time stamped when rows are written, nothing arrives late; a view keyed by event
time alone should set a lateness as long as its rows can be late.

**The source is read whole.** The source and its transform are read in full on every
run (a transform may need every row); incremental mode saves the online writes, which
are what a large materialization spends its time on.

**Crashes.** A chunk never ends between two rows of the same position, and after each
chunk is written the position it ended at is stored (the checkpoint). A run that finds
its view's last run unfinished continues from that checkpoint: no chunk is written
twice and none is skipped. A full run asked for explicitly starts over.

**Aggregates** are computed as of now for every entity of the view, from all its rows,
in both modes and on every run: windows slide, so an entity with no new row still has
new aggregates (a 24 h sum falls to 0 a day after its last row).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.checks.result import Report
    from conveyor.features.online import OnlineStore
    from conveyor.features.settings import FeaturesSpec, ViewSpec
    from conveyor.project import Project

__all__ = [
    "KILL_AFTER_CHUNK_ENV",
    "Materialized",
    "Progress",
    "join_keys",
    "materialize",
    "online_features",
    "online_store",
    "parity",
]

AGGREGATES_SUFFIX = "@aggregates"
#: The column holding the moment aggregates were computed for, when they are written.
_AS_OF = "__as_of"
#: Fault injection for the crash tests: the process kills itself (SIGKILL) right after
#: the checkpoint of its N-th chunk. Never set outside tests.
KILL_AFTER_CHUNK_ENV = "CONVEYOR_TESTING_MATERIALIZE_KILL_AFTER_CHUNK"


@dataclass(frozen=True, slots=True)
class Materialized:
    """What materializing one view did."""

    view: str
    rows: int  #: rows read: those after the watermark (every row in a full run)
    entities: int  #: distinct entities among them
    written: int  #: online records written (an entity written by two chunks counts twice)
    kept: int  #: rows not written because a newer one was stored
    expired: int  #: entities whose latest row was already past the TTL: not written
    aggregates: int  #: entities whose aggregates were written
    mode: str = "full"  #: "full" or "incremental" (a first incremental run is full)
    chunks: int = 0  #: chunks written by this call
    resumed: bool = False  #: whether it continued a run that had died
    skipped_chunks: int = 0  #: chunks the run it continued had written (not redone)
    watermark_before: datetime | None = None
    watermark_after: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "mode": self.mode,
            "rows": self.rows,
            "entities": self.entities,
            "written": self.written,
            "kept": self.kept,
            "expired": self.expired,
            "aggregates": self.aggregates,
            "chunks": self.chunks,
            "resumed": self.resumed,
            "skipped_chunks": self.skipped_chunks,
            "watermark_before": _iso(self.watermark_before),
            "watermark_after": _iso(self.watermark_after),
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """Where the materialization of one view is, as :func:`materialize` reports it."""

    view: str
    phase: Literal["rows", "aggregates", "done"]
    rows: int  #: rows written so far
    total: int  #: rows to write
    chunks: int  #: chunks written so far
    chunk_total: int


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def online_store(project: Project) -> OnlineStore:
    """The project's online store, over its ``online`` seam."""
    from conveyor.features.online import OnlineStore

    return OnlineStore(project.backend("online"))


def join_keys(spec: FeaturesSpec, view: ViewSpec) -> tuple[str, ...]:
    """Every join key of ``view``'s entities, in order, once."""
    return tuple(dict.fromkeys(k for e in view.entities for k in spec.entities[e].join_keys))


def materialize(
    project: Project,
    views: Sequence[str] | None = None,
    *,
    mode: Literal["incremental", "full"] = "incremental",
    now: datetime | None = None,
    actor: str = "features",
    chunk_rows: int | None = None,
    lateness: timedelta | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> list[Materialized]:
    """Write ``views`` (default: every view) to the online store, incrementally or in full
    (see the module): the latest row per entity (a newer row already stored is kept), in
    chunks of ``chunk_rows`` (default ``features.materialize.chunk_rows``) with a
    checkpoint after each, then the aggregates as of ``now``. ``progress`` is called
    after each chunk. One ``features.materialized`` event records what was done."""
    from conveyor.errors import NotFoundError
    from conveyor.features.events import FEATURES_MATERIALIZED
    from conveyor.features.settings import features_of

    if mode not in ("incremental", "full"):
        raise InvalidInputError(f"mode {mode!r}: 'incremental' or 'full'", field="mode")
    spec = features_of(project.spec)
    names = list(dict.fromkeys(views)) if views else list(spec.views)
    for name in names:
        if name not in spec.views:
            raise NotFoundError(
                f"no feature view {name!r}; declared: {', '.join(sorted(spec.views)) or 'none'}",
                view=name,
            )
    size = spec.materialize.chunk_rows if chunk_rows is None else chunk_rows
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInputError(f"chunk_rows {size!r}: a whole number > 0", field="chunk_rows")
    late = spec.materialize.lateness if lateness is None else lateness
    if not isinstance(late, timedelta) or late < timedelta(0):
        raise InvalidInputError(f"lateness {late!r}: a duration >= 0", field="lateness")
    moment = now or datetime.now(UTC)
    store = online_store(project)
    done = [
        _materialize_view(project, spec, name, store, mode, moment, actor, size, late, progress)
        for name in names
    ]
    project.events.record(
        FEATURES_MATERIALIZED,
        subject=project.name,
        actor=actor,
        payload={"views": [m.to_dict() for m in done]},
    )
    return done


def _positions(rows: pa.Table, view: ViewSpec) -> pa.ChunkedArray:
    """Each row's position: created time, else event time, as int64 ns since 1970."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stamp = pa.timestamp("ns", "UTC")
    event = rows.column(view.event_time).cast(stamp)
    if view.created_time is None:
        return event.cast(pa.int64())
    created = rows.column(view.created_time).cast(stamp)
    return pc.coalesce(created, event).cast(pa.int64())


def _bounds(positions: Any, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each chunk of sorted ``positions``: ``size`` rows, more when
    rows of the same position follow (a chunk never ends between two of them)."""
    import numpy as np

    n = len(positions)
    out = []
    start = 0
    while start < n:
        end = min(start + size, n)
        if end < n:
            end = int(np.searchsorted(positions, positions[end - 1], side="right"))
        out.append((start, end))
        start = end
    return out


def _materialize_view(
    project: Project,
    spec: FeaturesSpec,
    name: str,
    store: OnlineStore,
    mode: Literal["incremental", "full"],
    moment: datetime,
    actor: str,
    size: int,
    lateness: timedelta,
    progress: Callable[[Progress], None] | None,
) -> Materialized:
    import pyarrow.compute as pc

    from conveyor.features.sources import view_table
    from conveyor.features.watermark import Run, from_ns

    view = spec.views[name]
    keys = join_keys(spec, view)
    rows = view_table(project, name, view, actor=actor)
    # A row without an event time is never visible offline: never written online either.
    rows = rows.filter(pc.is_valid(rows.column(view.event_time)))
    run = Run.begin(project.store, name, view, mode, lateness)
    positions = _positions(rows, view)
    todo = rows
    if run.start is not None:
        newer = pc.greater(positions, run.start)
        todo, positions = rows.filter(newer), positions.filter(newer)
    read = todo.num_rows
    # The highest position read: the watermark once the run is through, even when the row
    # at it was superseded below and not written.
    top = int(pc.max(positions).as_py()) if read else None
    if view.features and read:
        # Only each entity's latest row can win online: write those alone (a chunk of
        # rows sorted by position held most entities again, 4x the writes on 10M rows).
        latest = _latest_per_entity(todo, keys, view.event_time, view.created_time)
        todo, positions = todo.take(latest), positions.take(latest)
    order = pc.sort_indices(positions)
    todo = todo.take(order)
    sorted_positions = positions.take(order).to_numpy()
    bounds = _bounds(sorted_positions, size)
    tell = progress or (lambda _: None)
    total = read
    tell(Progress(name, "rows", 0, total, 0, len(bounds)))
    written = kept = expired = 0
    high: int | None = None
    kill_after = int(os.environ.get(KILL_AFTER_CHUNK_ENV) or 0)
    done_rows = 0
    for k, (start, end) in enumerate(bounds, 1):
        if view.features:
            out = store.write(
                name,
                todo.slice(start, end - start),
                join_keys=keys,
                event_time=view.event_time,
                features=[f.name for f in view.features],
                created_time=view.created_time,
                ttl=view.ttl,
                types={f.name: f.type for f in view.features},
            )
            written, kept, expired = written + out.written, kept + out.kept, expired + out.expired
        high = int(sorted_positions[end - 1])
        done_rows = end if k < len(bounds) else read
        run.checkpoint(high, run.chunks_before + k, run.rows_before + done_rows)
        if k == kill_after:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        tell(Progress(name, "rows", done_rows, total, k, len(bounds)))
    entities = todo.select(list(keys)).group_by(list(keys)).aggregate([]).num_rows
    aggregated = 0
    if view.aggregates:
        tell(Progress(name, "aggregates", total, total, len(bounds), len(bounds)))
        aggregated = _write_aggregates(store, name, view, rows, keys, moment)
    after = run.finish(top if top is not None else high)
    tell(Progress(name, "done", total, total, len(bounds), len(bounds)))
    return Materialized(
        name,
        total,
        entities,
        written,
        kept,
        expired,
        aggregated,
        mode=run.mode,
        chunks=len(bounds),
        resumed=run.resumed,
        skipped_chunks=run.chunks_before,
        watermark_before=from_ns(run.watermark_before),
        watermark_after=from_ns(after),
    )


def _latest_per_entity(
    rows: pa.Table, keys: tuple[str, ...], event_time: str, created_time: str | None
) -> pa.Array:
    """Indices of each entity's latest row: the latest event time, ties broken by the
    later created time (a null one last), as the online store's compare-and-set decides."""
    import duckdb
    import pyarrow as pa

    indexed = rows.select([*keys, event_time, *([created_time] if created_time else [])])
    indexed = indexed.append_column("__i", pa.array(range(rows.num_rows), pa.int64()))
    order = f'"{event_time}" DESC' + (f', "{created_time}" DESC NULLS LAST' if created_time else "")
    partition = ", ".join(f'"{k}"' for k in keys)
    connection = duckdb.connect()
    try:
        connection.register("rows", indexed)
        found = connection.sql(
            f"SELECT __i FROM rows QUALIFY row_number() OVER "
            f"(PARTITION BY {partition} ORDER BY {order}) = 1 ORDER BY __i"
        ).to_arrow_table()
    finally:
        connection.close()
    return found.column("__i").combine_chunks()


def _write_aggregates(
    store: OnlineStore,
    name: str,
    view: ViewSpec,
    rows: pa.Table,
    keys: tuple[str, ...],
    moment: datetime,
) -> int:
    """The view's aggregates as of ``moment`` for every entity in ``rows``, written under
    ``<view>@aggregates`` with ``moment`` as their event time; the number of entities."""
    import pyarrow as pa

    from conveyor.features.retrieval import view_aggregates

    entity = rows.select(list(keys)).group_by(list(keys)).aggregate([])
    entity = entity.append_column(
        "event_timestamp", pa.array([moment] * entity.num_rows, pa.timestamp("us", "UTC"))
    )
    table = entity
    computed = view_aggregates(entity, view, rows, keys)
    for feature, column in computed.items():
        table = table.append_column(feature, column)
    table = table.append_column(_AS_OF, table.column("event_timestamp"))
    store.write(
        name + AGGREGATES_SUFFIX,
        table,
        join_keys=keys,
        event_time=_AS_OF,
        features=list(computed),
        ttl=view.ttl,
    )
    return int(table.num_rows)


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
        key_names = join_keys(spec, view)
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
