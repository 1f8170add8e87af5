"""Point-in-time correct retrieval for training: feature values as they were known.

Plain inputs, Arrow out: an entity frame (join keys plus a time per row) and
feature views (a source table or Parquet files, its join keys, its event-time
column, the features to return). Built on DuckDB; neither DuckDB nor Arrow is
imported until a function here is called.

**Which feature row an entity row gets.** For an entity row at time ``t`` a
feature row of the same entity is *visible* when

- its event time ``e <= t`` (the right edge is inclusive: a value stamped at
  exactly ``t`` is seen at ``t``);
- with a TTL, also ``e > t - ttl`` (the left edge is exclusive: a value exactly
  ``ttl`` old has expired; the same half-open window ``(t - w, t]`` as
  :func:`aggregate_frame`);
- "as known at" (``as_known_at=True``, the default, and the view has a
  created-time column): its created time ``c <= t`` too, so a row backfilled
  after ``t`` cannot leak into the past. A null created time counts as known
  at its event time.

Among visible rows the latest event time wins; ties on the event time go to
the later created time (a null created time loses to any other); rows equal
on both go to the one later in the source (row order of an Arrow table;
for Parquet, file order as listed or as the glob sorts, then row order).
Rows with a null event time are never visible; entity rows with a null time
or a null key get nulls.

**What comes back.** The entity frame exactly as given (every column, every
row, in order; duplicate rows stay duplicated) plus one column per feature,
``<view>__<feature>`` (or ``<feature>`` with ``full_names=False``), null where
nothing is visible.

**Time.** Timestamps of any unit (s, ms, us, ns), time-zone aware or naive
(naive means UTC) and dates (midnight UTC) are compared as instants, to the
nanosecond.

**How.** One DuckDB query per view, over Parquet read by DuckDB itself (or an
Arrow table), after cutting the view to the rows some entity row can see. Most
entity rows are joined by a hash join and ``arg_max`` per row; the rows of keys
that occur many times in the entity frame by the record-setter reduction and an
ASOF join, whose cost does not grow with them. :mod:`conveyor.features.offline_plans`
describes both (and a third, ``plan="window"``); ``benchmarks/features_offline.py``
measures them. DuckDB spills to ``spill_dir`` (a temporary directory by default)
within ``memory_limit``.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import InvalidInputError
from conveyor.features import offline_plans
from conveyor.features.offline_plans import (
    EntityTimes,
    Plan,
    Source,
    int64_array,
    literal,
    q,
    row_numbers,
    view_sql,
)

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

#: At most this many views are joined at the same time by :func:`get_training_frame`.
MAX_VIEWS_IN_FLIGHT = 4

__all__ = [
    "AGGREGATES",
    "Plan",
    "ViewFrame",
    "aggregate_frame",
    "get_historical_range",
    "get_training_frame",
    "window_label",
]

#: The functions :func:`aggregate_frame` computes.
AGGREGATES = ("sum", "count", "mean", "min", "max")


@dataclass(frozen=True)
class ViewFrame:
    """One feature view as the offline engine sees it: where its rows are and what they hold."""

    #: The view's name; output columns are ``<name>__<feature>`` unless ``full_names=False``.
    name: str
    #: An Arrow table, or a Parquet file, folder (every ``*.parquet`` under it) or glob.
    source: pa.Table | str | Path
    #: Entity join key columns, named the same in the entity frame.
    join_keys: tuple[str, ...]
    #: The event-timestamp column.
    event_time: str
    #: The feature columns to return.
    features: tuple[str, ...]
    #: Optional created-timestamp column: breaks ties, and with ``as_known_at`` hides backfills.
    created_time: str | None = None
    #: How long a value stays visible after its event time; ``None``: forever.
    ttl: timedelta | None = None


# -- public functions ------------------------------------------------------------


def get_training_frame(
    entity: pa.Table | str | Path,
    views: Sequence[ViewFrame],
    *,
    entity_time: str = "event_timestamp",
    as_known_at: bool = True,
    full_names: bool = True,
    spill_dir: Path | None = None,
    memory_limit: str | None = None,
    plan: Plan = "auto",
) -> pa.Table:
    """The entity frame with every view's features as of each row's time (module docstring).

    ``plan`` picks how the rows are joined (:mod:`conveyor.features.offline_plans`);
    every plan returns the same frame."""
    table = _read_entity(entity)
    views = tuple(views)
    keys = _all_keys(views)
    _require_columns(table.column_names, (entity_time, *keys), "entity frame")
    names = _output_names(table.column_names, views, full_names)
    with _connection(spill_dir, memory_limit) as con:
        times = _register_entity(con, table, entity_time, keys)
        # Every source is checked before any join runs.
        sources = [_open_source(con, view, f"src_{i}") for i, view in enumerate(views)]
        entities: dict[tuple[str, ...], tuple[str, int]] = {}
        for view in views:
            if view.join_keys not in entities:
                entities[view.join_keys] = _entity_by_keys(con, view.join_keys, len(entities))

        def join(i: int) -> pa.Table:
            view = views[i]
            ent, heavy_rows = entities[view.join_keys]
            cursor = con.cursor()  # a connection of its own: queries run side by side
            try:
                src = _open_source(cursor, view, f"src_{i}")
                packed = None
                if plan in ("auto", "hash") and offline_plans.PACK:
                    known_at = bool(as_known_at and view.created_time)
                    packed = offline_plans.packing(view, src, cursor, times, known_at=known_at)
                sql = view_sql(
                    view,
                    src,
                    ent,
                    times,
                    as_known_at=as_known_at,
                    plan=plan,
                    heavy_rows=heavy_rows,
                    packed=packed,
                )
                return cursor.sql(sql).to_arrow_table()
            finally:
                cursor.close()

        # Views side by side, DuckDB's threads shared between them: on 2 cores, two
        # single-threaded queries took 10% less CPU and wall time than one after the
        # other on two threads (a query's building and finishing phases run on one).
        cores = int(con.sql("SELECT current_setting('threads')").fetchall()[0][0])
        in_flight = max(1, min(len(views), cores, MAX_VIEWS_IN_FLIGHT))
        con.execute(f"SET threads = {max(1, cores // in_flight)}")
        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            results = pool.map(join, range(len(views)))
            for view, src, result in zip(views, sources, results, strict=True):
                where = _positions(result.column(0), table.num_rows)
                for j, feature in enumerate(view.features):
                    column = result.column(j + 1).combine_chunks().take(where)
                    table = table.append_column(
                        names[view.name, feature], src.cast(feature, column)
                    )
    return table


def get_historical_range(
    views: Sequence[ViewFrame],
    start: datetime,
    end: datetime,
    *,
    as_known_at: bool = True,
    full_names: bool = True,
    entity_time: str = "event_timestamp",
    spill_dir: Path | None = None,
    memory_limit: str | None = None,
) -> pa.Table:
    """Every entity seen in ``[start, end]``, with its latest visible values at ``end``.

    Returns one row per distinct join-key tuple that has, in any of ``views``,
    a row with an event time in ``[start, end]`` (both edges inclusive; with
    ``as_known_at``, also created by ``end``), sorted by the keys; then the
    column ``entity_time`` (``end`` as a UTC timestamp, naive ``end`` read as
    UTC) and the features exactly as :func:`get_training_frame` computes them
    for that frame. An entity seen in one view only still gets every view's
    columns (null where nothing is visible). All views must share their join
    keys. ``start`` after ``end`` is refused.
    """
    import pyarrow as pa

    views = tuple(views)
    if not views:
        raise InvalidInputError("get_historical_range needs at least one view", field="views")
    keys = views[0].join_keys
    for view in views[1:]:
        if tuple(view.join_keys) != tuple(keys):
            raise InvalidInputError(
                f"view {view.name!r} joins on {list(view.join_keys)}, view {views[0].name!r} "
                f"on {list(keys)}: a historical range needs the same join keys",
                field="join_keys",
                view=view.name,
            )
    lo, hi = _instant_ns(start), _instant_ns(end)
    if lo > hi:
        raise InvalidInputError(f"start {start} is after end {end}", field="start")
    with _connection(spill_dir, memory_limit) as con:
        parts = []
        for i, view in enumerate(views):
            src = _open_source(con, view, f"src_{i}")
            key_list = ", ".join(q(k) for k in keys)
            where = f"{src.ns(view.event_time)} BETWEEN {lo} AND {hi}"
            if as_known_at and view.created_time:
                where += f" AND coalesce({src.ns(view.created_time)}, {lo}) <= {hi}"
            parts.append(f"SELECT DISTINCT {key_list} FROM {src.relation} WHERE {where}")
        order = ", ".join(q(k) for k in keys)
        entities = con.sql(
            f"SELECT DISTINCT * FROM ({' UNION ALL '.join(parts)}) ORDER BY {order}"
        ).to_arrow_table()
    when = pa.array([hi // 1000] * entities.num_rows, pa.int64()).cast(pa.timestamp("us", "UTC"))
    entities = entities.append_column(entity_time, when)
    return get_training_frame(
        entities,
        views,
        entity_time=entity_time,
        as_known_at=as_known_at,
        full_names=full_names,
        spill_dir=spill_dir,
        memory_limit=memory_limit,
    )


def aggregate_frame(
    entity: pa.Table | str | Path,
    source: pa.Table | str | Path,
    *,
    join_keys: Sequence[str],
    event_time: str,
    column: str,
    functions: Sequence[str] = AGGREGATES,
    windows: Sequence[timedelta] = (timedelta(hours=1), timedelta(days=1), timedelta(days=7)),
    entity_time: str = "event_timestamp",
    as_known_at: bool = True,
    created_time: str | None = None,
    spill_dir: Path | None = None,
    memory_limit: str | None = None,
) -> pa.Table:
    """The entity frame plus ``<column>__<function>__<window>`` per function and window.

    For an entity row at ``t`` a window ``w`` covers the source rows of that
    entity with event time in ``(t - w, t]`` (and, ``as_known_at`` with a
    ``created_time``, created by ``t``); of those, the non-null values of
    ``column`` are aggregated. ``count`` is their number (0 when none);
    ``sum`` is 0 when none (an integer column sums as int64, a float one as
    float64); ``mean`` (float64), ``min`` and ``max`` (the column's type) are
    null when none. The window label is the shortest form: ``1h``, ``7d``,
    ``1h30m``, ``90s`` (see :func:`window_label`).
    """
    functions = tuple(functions)
    windows = tuple(windows)
    keys = tuple(join_keys)
    unknown = [f for f in functions if f not in AGGREGATES]
    if unknown or not functions:
        raise InvalidInputError(
            f"unknown aggregate {unknown[0]!r}: use {', '.join(AGGREGATES)}"
            if unknown
            else "no aggregate function given",
            field="functions",
        )
    if not windows or any(w <= timedelta(0) for w in windows):
        raise InvalidInputError("windows must be positive durations", field="windows")
    table = _read_entity(entity)
    _require_columns(table.column_names, (entity_time, *keys), "entity frame")
    view = ViewFrame(
        name="aggregate",
        source=source,
        join_keys=keys,
        event_time=event_time,
        features=(column,),
        created_time=created_time,
    )
    labels = [window_label(w) for w in windows]
    if len(set(labels)) != len(labels):
        raise InvalidInputError("two windows have the same length", field="windows")
    out_names = [f"{column}__{fn}__{label}" for label in labels for fn in functions]
    clash = [n for n in out_names if n in table.column_names]
    if clash:
        raise InvalidInputError(
            f"the entity frame already has a column {clash[0]!r}", field=clash[0]
        )
    with _connection(spill_dir, memory_limit) as con:
        _register_entity(con, table, entity_time, keys)
        src = _open_source(con, view, "src_0")
        value_type = src.types[column].upper()
        integer = "INT" in value_type and "INTERVAL" not in value_type
        widest = max(_ns_of(w) for w in windows)
        on = " AND ".join(f"e.{q(k)} = s.{q(k)}" for k in keys)
        known = ""
        if as_known_at and created_time:
            known = " AND coalesce(s._cr, s._ev) <= e._t"
        created = src.ns(created_time) if created_time else "NULL::BIGINT"
        selects = []
        for w, label in zip(windows, labels, strict=True):
            inside = f"s._ev > e._t - {_ns_of(w)}"
            v = f"s.{q(column)}"
            for fn in functions:
                name = q(f"{column}__{fn}__{label}")
                if fn == "count":
                    expr = f"count({v}) FILTER (WHERE {inside})"
                elif fn == "sum":
                    cast = "BIGINT" if integer else "DOUBLE"
                    expr = f"coalesce(sum({v}) FILTER (WHERE {inside}), 0)::{cast}"
                elif fn == "mean":
                    expr = f"avg({v}::DOUBLE) FILTER (WHERE {inside})"
                else:
                    expr = f"{fn}({v}) FILTER (WHERE {inside})"
                selects.append(f"{expr} AS {name}")
        sql = f"""
            WITH s AS (
                SELECT {", ".join(q(k) for k in keys)}, {src.ns(event_time)} AS _ev,
                       {created} AS _cr, {q(column)}
                FROM {src.relation}
                WHERE {q(event_time)} IS NOT NULL
            )
            SELECT e._rid, {", ".join(selects)}
            FROM ent e LEFT JOIN s
              ON {on} AND s._ev <= e._t AND s._ev > e._t - {widest}{known}
            GROUP BY e._rid
            ORDER BY e._rid
        """
        result = con.sql(sql).to_arrow_table()
    for name in out_names:
        col = result.column(name).combine_chunks()
        if name.split("__")[-2] in ("min", "max"):
            col = src.cast(column, col)
        table = table.append_column(name, col)
    return table


def window_label(window: timedelta) -> str:
    """``7d``, ``24h``, ``1h30m``, ``1m30s``: whole days from two days up (a day is ``24h``,
    as people write it), else hours, minutes, seconds and microseconds. Feature names
    (``amount_sum_24h``) are made with it."""
    micros = window // timedelta(microseconds=1)
    day = 86_400_000_000
    parts = []
    if micros % day == 0 and micros >= 2 * day:
        return f"{micros // day}d"
    for unit, size in (("h", 3_600_000_000), ("m", 60_000_000)):
        n, micros = divmod(micros, size)
        if n:
            parts.append(f"{n}{unit}")
    seconds, micros = divmod(micros, 1_000_000)
    if seconds:
        parts.append(f"{seconds}s")
    if micros:
        parts.append(f"{micros}us")
    return "".join(parts) or "0s"


# -- inputs ----------------------------------------------------------------------


def _read_entity(entity: pa.Table | str | Path) -> pa.Table:
    import pyarrow as pa

    if isinstance(entity, pa.Table):
        return entity
    # File by file: pyarrow.dataset would import pandas (a quarter of a second).
    import pyarrow.parquet as pq

    files = _parquet_files(entity, what="entity frame", field="entity")
    tables = [pq.ParquetFile(f).read() for f in files]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


def _register_entity(
    con: duckdb.DuckDBPyConnection, table: pa.Table, entity_time: str, keys: Sequence[str]
) -> EntityTimes:
    """Register ``ent``: the keys under their own names, ``_t`` (ns) and ``_rid`` (row number)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    time_type = table.schema.field(entity_time).type
    if pa.types.is_timestamp(time_type):
        instants = table.column(entity_time).cast(pa.timestamp("ns", time_type.tz)).cast(pa.int64())
    elif pa.types.is_date(time_type):
        instants = (
            table.column(entity_time)
            .cast(pa.date32())
            .cast(pa.timestamp("s"))
            .cast(pa.timestamp("ns"))
            .cast(pa.int64())
        )
    else:
        raise InvalidInputError(
            f"entity frame: column {entity_time!r} is {time_type}, not a timestamp",
            field=entity_time,
        )
    slim = pa.table(
        {
            **{k: table.column(k) for k in keys},
            "_t": instants,
            "_rid": row_numbers(table.num_rows),
        }
    )
    con.register("ent", slim)
    bounds = pc.min_max(instants)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    # No entity row with a time: any bounds do, since no row can match.
    return EntityTimes(0 if lo is None else lo, 0 if hi is None else hi)


def _entity_by_keys(
    con: duckdb.DuckDBPyConnection, keys: tuple[str, ...], number: int
) -> tuple[str, int]:
    """A table of the entity rows for views joined on ``keys`` (as ``view_sql`` reads it)
    and how many of its rows have a key with more than ``HEAVY_KEY_ROWS`` rows."""
    name = f"ent_{number}"
    aliases = ", ".join(f"{q(k)} AS _k{i}" for i, k in enumerate(keys))
    partition = ", ".join(q(k) for k in keys)
    limit = offline_plans.HEAVY_KEY_ROWS
    found = con.sql(
        f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM ent GROUP BY {partition}) "
        f"WHERE n > {limit}"
    ).fetchall()
    heavy = int(found[0][0])
    # Each row's count of rows of its key, only when some key is heavy (it costs a window).
    count = f"count(*) OVER (PARTITION BY {partition})" if heavy else "0"
    # Not TEMP: the other connections (cursors) of this database read it.
    con.execute(f"CREATE TABLE {name} AS SELECT {aliases}, _t, _rid, {count} AS _n FROM ent")
    return name, heavy


def _positions(rids: pa.ChunkedArray, n: int) -> pa.Array:
    """For each entity row, the index of its result row (null: it has none)."""
    import numpy as np
    import pyarrow as pa

    # NumPy over the buffer: to_numpy() imports pandas.
    flat = rids.cast(pa.int64()).combine_chunks()
    rows = np.frombuffer(flat.buffers()[1], dtype=np.int64, count=len(flat), offset=flat.offset * 8)
    where = np.full(n, -1, dtype=np.int64)
    where[rows] = np.arange(len(rows), dtype=np.int64)
    return int64_array(where, where >= 0)


def _open_source(con: duckdb.DuckDBPyConnection, view: ViewFrame, alias: str) -> Source:
    import pyarrow as pa

    if isinstance(view.source, pa.Table):
        return Source.open(con, view, alias, None)
    files = _parquet_files(view.source, what=f"view {view.name!r}", field="source")
    return Source.open(con, view, alias, files)


def _parquet_files(path: str | Path, *, what: str, field: str) -> list[str]:
    text = os.fspath(path)
    if os.path.isdir(text):
        files = sorted(
            glob.glob(os.path.join(glob.escape(text), "**", "*.parquet"), recursive=True)
        )
    elif glob.has_magic(text):
        files = sorted(glob.glob(text, recursive=True))
    else:
        files = [text] if os.path.exists(text) else []
    if not files:
        raise InvalidInputError(f"{what}: no Parquet file at {text}", field=field, path=text)
    return files


def _require_columns(present: Sequence[str], needed: Sequence[str], what: str) -> None:
    missing = [c for c in dict.fromkeys(needed) if c not in present]
    if missing:
        raise InvalidInputError(
            f"{what} has no column {', '.join(repr(c) for c in missing)} "
            f"(it has {', '.join(present)})",
            field=missing[0],
            missing=missing,
        )


def _all_keys(views: Sequence[ViewFrame]) -> tuple[str, ...]:
    keys: dict[str, None] = {}
    for view in views:
        if not view.join_keys:
            raise InvalidInputError(f"view {view.name!r} has no join keys", field="join_keys")
        for k in view.join_keys:
            keys[k] = None
    return tuple(keys)


def _output_names(
    existing: Sequence[str], views: Sequence[ViewFrame], full_names: bool
) -> dict[tuple[str, str], str]:
    names: dict[tuple[str, str], str] = {}
    taken = set(existing)
    for view in views:
        for feature in view.features:
            name = f"{view.name}__{feature}" if full_names else feature
            if name in taken:
                raise InvalidInputError(
                    f"two columns would be named {name!r} (view {view.name!r})"
                    + ("" if full_names else "; use full_names=True"),
                    field=name,
                    view=view.name,
                )
            taken.add(name)
            names[view.name, feature] = name
    return names


# -- DuckDB and time helpers -----------------------------------------------------


@contextmanager
def _connection(
    spill_dir: Path | None, memory_limit: str | None
) -> Iterator[duckdb.DuckDBPyConnection]:
    import duckdb

    with tempfile.TemporaryDirectory(prefix="conveyor-features-") as scratch:
        con = duckdb.connect(":memory:")
        try:
            con.execute(f"SET temp_directory = {literal(str(spill_dir or scratch))}")
            if memory_limit:
                con.execute(f"SET memory_limit = {literal(memory_limit)}")
            # Every query orders its output itself.
            con.execute("SET preserve_insertion_order = false")
            yield con
        finally:
            con.close()


def _instant_ns(value: datetime) -> int:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
    return _ns_of(delta)


def _ns_of(delta: timedelta) -> int:
    return (delta // timedelta(microseconds=1)) * 1000
