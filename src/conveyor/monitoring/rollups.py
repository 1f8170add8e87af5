"""Per-minute rollups of the columnar copy: what the traffic monitors read for compacted hours.

Compaction writes, beside every file of ``prediction`` and ``prediction.failed`` events,
its *rollup*: one Parquet file under ``rollups/`` with the same partition and name::

    events/kind=prediction/date=2026-12-04/hour=07/000000418211-000000618210.parquet
    rollups/kind=prediction/date=2026-12-04/hour=07/000000418211-000000618210.parquet

holding one row per minute (UTC), model, version and arm: ``n`` (events), and for
predictions ``cached``, ``rows`` (summed), ``max_ms`` and the *latency sketch*, two lists
``buckets`` and ``counts``: bucket ``k`` holds the latencies in ``(gamma^(k-1), gamma^k]``
ms with ``gamma = (1 + a) / (1 - a)`` and ``a`` = :data:`RELATIVE_ERROR` (1 %), the scheme
of DDSketch (a latency of 0 or less is in bucket :data:`ZERO_KEY`, read back as 0); for
failed requests ``errors_4xx``, ``errors_5xx`` and ``shed`` (as :mod:`.system_query`
counts them). A day of 10 million predictions over six (model, version, arm) groups is
8,640 rows and about 1.5 million (bucket, count) pairs.

Counts add up, so any set of minutes merges exactly: requests, errors, cached answers,
rows and the maximum are the raw query's to the unit. A quantile is read from the
merged buckets the way DuckDB's ``quantile_cont`` reads sorted values: the order
statistics at ranks ``floor(h)`` and ``ceil(h)`` with ``h = (n - 1) p``, interpolated
linearly. Each order statistic is estimated by its bucket's ``2 gamma^k / (gamma + 1)``,
within ``a`` of its value relative to it, and an interpolation of two such estimates is
within ``a`` of the interpolation of the values: **every p50/p95/p99 is within 1 % of
the exact answer** (and never above the exact maximum). ``tests/monitoring/
test_rollups_agree.py`` holds both against the raw query.

A query over ``[since, until)`` reads the rollups of the listed files for the whole
minutes inside the range, and raw events for the rest: the partial minutes at either
end, files listed without a rollup (compacted before rollups existed; :func:`backfill`
writes theirs) and the log's tail. A file and its rollup are written durably before the
compaction's transaction lists the file, so a listed file of a rolled-up kind always
has its rollup, and neither is read before it is listed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from conveyor.monitoring.query import MonitorQuery, Snapshot
    from conveyor.project import Project

__all__ = [
    "FOLDER",
    "GAMMA",
    "KINDS",
    "MINUTE_US",
    "RELATIVE_ERROR",
    "ZERO_KEY",
    "Rolled",
    "backfill",
    "bucket_value",
    "grouped",
    "rollup_path",
    "rollup_table",
]

#: The rollups' folder, under the artifact store's root, beside the copy's ``events/``.
FOLDER = "rollups"
#: The kinds compaction rolls up.
KINDS = ("prediction", "prediction.failed")
#: Servers' samples: their rollup is the samples themselves with the payload parsed once
#: (a typed struct, as the system monitors read it), not an aggregate.
SAMPLE_KIND = "serving.sample"
_WRITTEN = (*KINDS, SAMPLE_KIND)
MINUTE_US = 60_000_000
#: The largest error of a quantile read from the rollups, relative to the exact value.
RELATIVE_ERROR = 0.01
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(GAMMA)
#: The bucket of latencies of 0 ms or less.
ZERO_KEY = -(2**31)
#: The most bytes of decoded rollups a process keeps in memory (see :class:`_Decoded`).
CACHE_BYTES = 256 * 1024 * 1024

#: A latency's bucket, in DuckDB SQL (``{x}``: the latency). The same expression builds
#: the rollups and buckets the raw events a query merges with them.
_KEY_SQL = f"CASE WHEN {{x}} > 0 THEN ceil(ln({{x}}) / {_LOG_GAMMA!r})::INTEGER ELSE {ZERO_KEY} END"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The columns of a rollup file, in order (DuckDB types).
COLUMNS: dict[str, str] = {
    "minute_us": "BIGINT",
    "model": "VARCHAR",
    "version": "VARCHAR",
    "arm": "VARCHAR",
    "n": "BIGINT",
    "cached": "BIGINT",
    "rows": "BIGINT",
    "max_ms": "DOUBLE",
    "errors_4xx": "BIGINT",
    "errors_5xx": "BIGINT",
    "shed": "BIGINT",
    "buckets": "INTEGER[]",
    "counts": "BIGINT[]",
}


def _select(values: dict[str, str]) -> str:
    """Every column of :data:`COLUMNS`, from ``values`` or null, cast to its type."""
    return ", ".join(
        f'CAST({values.get(name, "NULL")} AS {kind}) AS "{name}"' for name, kind in COLUMNS.items()
    )


def _rollup_sql(kind: str, source: str, window: str) -> str:
    """The rollup rows of ``source`` (events of ``kind``), grouped by ``window`` (an SQL
    expression of ``time_us``: the minute, or a query's window when it buckets raw
    events)."""
    keys = f"{window} AS minute_us, subject AS model, subject_version AS version, arm"
    same = (
        "t.minute_us = s.minute_us AND t.model IS NOT DISTINCT FROM s.model "
        "AND t.version IS NOT DISTINCT FROM s.version AND t.arm IS NOT DISTINCT FROM s.arm"
    )
    if kind == "prediction":
        columns = _select(
            {
                "minute_us": "t.minute_us",
                "model": "t.model",
                "version": "t.version",
                "arm": "t.arm",
                "n": "t.n",
                "cached": "t.cached",
                "rows": "t.rows",
                "max_ms": "t.max_ms",
                "buckets": "s.buckets",
                "counts": "s.counts",
            }
        )
        return f"""
            WITH t AS (
                SELECT {keys}, count(*) AS n, count_if(cached) AS cached, sum("rows") AS rows,
                       max(latency_ms) AS max_ms
                FROM {source} GROUP BY ALL
            ),
            b AS (
                SELECT {keys}, {_KEY_SQL.format(x="latency_ms")} AS k, count(*) AS c
                FROM {source} WHERE latency_ms IS NOT NULL GROUP BY ALL
            ),
            s AS (
                SELECT minute_us, model, version, arm, list(k ORDER BY k) AS buckets,
                       list(c ORDER BY k) AS counts
                FROM b GROUP BY ALL
            )
            SELECT {columns} FROM t LEFT JOIN s ON {same}
        """
    columns = _select(
        {
            "minute_us": "minute_us",
            "model": "model",
            "version": "version",
            "arm": "arm",
            "n": "count(*)",
            "errors_4xx": "count_if(status LIKE '4%')",
            "errors_5xx": "count_if(status LIKE '5%')",
            "shed": "count_if(code = 'overloaded')",
        }
    )
    return f"SELECT {columns} FROM (SELECT {keys}, status, code FROM {source}) GROUP BY ALL"


def rollup_path(relative: str) -> str:
    """The rollup of the copy's file ``events/kind=.../<first>-<last>.parquet``."""
    from conveyor.monitoring.columnar import FOLDER as EVENTS

    head, slash, rest = relative.partition("/")
    if head != EVENTS or not slash:
        raise ValueError(f"not a file of the copy: {relative!r}")
    return f"{FOLDER}/{rest}"


def _kind_of(relative: str) -> str | None:
    for part in relative.split("/"):
        if part.startswith("kind="):
            return part.removeprefix("kind=")
    return None


def rollup_table(part: pa.Table, con: duckdb.DuckDBPyConnection) -> pa.Table | None:
    """The rollup of one file's events (a table of the copy's schema, one kind), sorted by
    minute, model, version and arm; None for a kind not rolled up."""
    import pyarrow.compute as pc

    if part.num_rows == 0:
        return None
    kind = pc.min(part["kind"]).as_py()
    if kind not in _WRITTEN or kind != pc.max(part["kind"]).as_py():
        return None
    con.register("_part", part)
    try:
        if kind == SAMPLE_KIND:
            return con.sql(
                f"SELECT time_us, {_sample_struct('payload')} AS p FROM _part ORDER BY time_us"
            ).to_arrow_table()
        sql = _rollup_sql(kind, "_part", f"time_us // {MINUTE_US} * {MINUTE_US}")
        return con.sql(
            f"SELECT * FROM ({sql}) ORDER BY minute_us, model, version, arm"
        ).to_arrow_table()
    finally:
        con.unregister("_part")


def write_rollup(
    part: pa.Table, relative: str, root: Path, con: duckdb.DuckDBPyConnection
) -> str | None:
    """Write the rollup of the copy's file ``relative`` (whose rows are ``part``) durably;
    its path, or None when the kind is not rolled up."""
    from conveyor.monitoring.columnar import write_durably

    table = rollup_table(part, con)
    if table is None:
        return None
    path = rollup_path(relative)
    write_durably(table, root / path)
    return path


def backfill(project: Project) -> int:
    """Write the rollups missing for files listed before compaction wrote them (a file of
    the copy never changes once listed, so its rollup never goes stale); how many. Safe to
    run beside compaction and queries: a rollup appears whole or not at all."""
    import duckdb
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from conveyor.monitoring.compaction import LOG, copy_root
    from conveyor.monitoring.tables import CompactedFileRecord as F

    root = copy_root(project)
    with project.store.read() as session:
        paths = list(
            session.execute(
                sa.select(F.path).where(F.log == LOG, F.kind.in_(_WRITTEN)).order_by(F.first_seq)
            ).scalars()
        )
    done = 0
    con = duckdb.connect()
    try:
        for relative in paths:
            if (root / rollup_path(relative)).exists():
                continue
            if write_rollup(pq.read_table(root / relative), relative, root, con):
                done += 1
    finally:
        con.close()
    return done


def remove_uncommitted(root: Path, last_seq: int) -> int:
    """Delete rollups a dead compaction left: temporary files, and rollups of files above
    the checkpoint (never listed). Returns how many went."""
    from conveyor.monitoring.columnar import parse_file_name

    folder = root / FOLDER
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        seqs = parse_file_name(path.name)
        stale = path.name.startswith(".") and path.name.endswith(".tmp")
        if stale or (seqs is not None and seqs[0] > last_seq):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class _Decoded:
    """Rollup files already decoded, kept in memory up to :data:`CACHE_BYTES` (least
    recently read first out).

    A rollup never changes once written (its file of the copy never does), so a process
    that answers monitor queries again and again (the server behind the dashboard) reads
    each one from disk once; a whole day's latency rollups are tens of MB decoded. The
    key holds the file's size and modification time as well as its path, so a file
    written again under the same name (:func:`backfill` after a restore) is read again.
    Thread-safe: queries run on a server's worker threads."""

    def __init__(self, limit: int) -> None:
        import threading
        from collections import OrderedDict

        self.limit = limit
        self.bytes = 0
        self._tables: OrderedDict[tuple[str, int, int], tuple[pa.Table, int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> tuple[pa.Table, int, int]:
        """The file's table, and its first and last ``minute_us`` (0, -1 when empty or
        not a minute rollup)."""
        import os

        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            found = self._tables.get(key)
            if found is not None:
                self._tables.move_to_end(key)
                return found
        table = pq.read_table(path).combine_chunks()
        low, high = 0, -1
        if table.num_rows and "minute_us" in table.column_names:
            span = pc.min_max(table["minute_us"])
            low, high = int(span["min"].as_py()), int(span["max"].as_py())
        entry = (table, low, high)
        with self._lock:
            if key not in self._tables:
                self._tables[key] = entry
                self.bytes += table.nbytes
            while self.bytes > self.limit and len(self._tables) > 1:
                _, (old, _, _) = self._tables.popitem(last=False)
                self.bytes -= old.nbytes
        return entry

    def rows(
        self, paths: Sequence[str], columns: Sequence[str], first: int, last: int
    ) -> pa.Table | None:
        """The rows of ``paths`` (``columns`` of them) whose minute is in ``[first,
        last)``, as one table (None when ``paths`` is empty). A file wholly inside the
        range is taken as it is, with no copy."""
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = []
        for path in paths:
            table, low, high = self.get(path)
            table = table.select(list(columns))
            if low < first or high >= last:
                minute = table["minute_us"]
                table = table.filter(
                    pc.and_(pc.greater_equal(minute, first), pc.less(minute, last))
                )
            parts.append(table)
        return pa.concat_tables(parts) if parts else None

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()
            self.bytes = 0


_DECODED = _Decoded(CACHE_BYTES)


def warm(project: Project, *, hours: float = 24, stop: Callable[[], bool] = lambda: False) -> int:
    """Decode into memory the rollups of the files listed for the last ``hours`` (newest
    first, so the default views' hour comes first), until ``stop()`` says so or the
    cache is full; how many files. A server calls it once, after start, so the first
    fetch of a day's traffic does not pay for decoding (about half a second for 10
    million events).

    With no rollup on disk it returns 0 before it imports the query layer (the ORM's
    tables, a store session: a few hundred milliseconds of CPU under the interpreter lock,
    which requests in flight on the server would wait on, docs/dashboard.md)."""
    from conveyor.monitoring.compaction import LOG, copy_root

    root = copy_root(project)
    written = root / FOLDER
    if not written.is_dir() or next(written.rglob("*.parquet"), None) is None:
        return 0

    import sqlalchemy as sa

    from conveyor.monitoring.columnar import HOUR_US
    from conveyor.monitoring.tables import CompactedFileRecord as F

    since_us = (datetime.now(UTC) - _EPOCH) // timedelta(microseconds=1) - int(hours * HOUR_US)
    with project.store.read() as session:
        paths = list(
            session.execute(
                sa.select(F.path)
                .where(F.log == LOG, F.kind.in_(_WRITTEN), F.max_time_us >= since_us)
                .order_by(F.first_seq.desc())
            ).scalars()
        )
    done = 0
    for relative in paths:
        if stop() or _DECODED.bytes >= _DECODED.limit:
            break
        path = root / rollup_path(relative)
        if path.exists():
            _DECODED.get(str(path))
            done += 1
    return done


def _sample_struct(payload: str) -> str:
    from conveyor.monitoring.system_query import SAMPLE_SHAPE

    return f"from_json({payload}, '{SAMPLE_SHAPE}')"


def samples_sql(
    monitor: MonitorQuery,
    con: duckdb.DuckDBPyConnection,
    snapshot: Snapshot,
    *,
    since_us: int,
    until_us: int,
) -> str | None:
    """The servers' samples in ``[since_us, until_us)`` as ``(time_us, p)``, ``p`` the
    parsed payload: from the parsed copies of the listed files that have one (registered
    on ``con`` as ``_parsed_samples``), and the other files and the tail (``_tail``)
    parsed here. None when no file has a parsed copy (the caller parses every payload,
    as before)."""
    from conveyor.monitoring.compaction import copy_root
    from conveyor.monitoring.query import _view_sql

    root = copy_root(monitor.project)
    files = [f for f in snapshot.files if f.startswith(f"events/kind={SAMPLE_KIND}/")]
    parsed = [f for f in files if (root / rollup_path(f)).exists()]
    if not parsed:
        return None
    has = set(parsed)
    raw = _view_sql(
        str(root), [f for f in files if f not in has], [SAMPLE_KIND], since_us, until_us
    )
    import pyarrow as pa

    tables = [_DECODED.get(str(root / rollup_path(f)))[0] for f in parsed]
    con.register("_parsed_samples", pa.concat_tables(tables, promote_options="permissive"))
    return (
        f"SELECT time_us, {_sample_struct('payload')} AS p FROM ({raw}) UNION ALL "
        f"SELECT time_us, p FROM _parsed_samples "
        f"WHERE time_us >= {since_us} AND time_us < {until_us}"
    )


# -- reading ---------------------------------------------------------------------------------


def bucket_value(k: int) -> float:
    """The estimate of a latency in bucket ``k``: within :data:`RELATIVE_ERROR` of it."""
    if k == ZERO_KEY:
        return 0.0
    return 2.0 * math.exp(k * _LOG_GAMMA) / (GAMMA + 1.0)


@dataclass(frozen=True, slots=True)
class Rolled:
    """What a query read from the rollups: the answered and failed groups (keyed as the
    system monitors key them: model, version, arm, window start), how many rollup files,
    raw files and edge files it read."""

    answered: dict[tuple[Any, ...], tuple[Any, ...]]
    failed: dict[tuple[Any, ...], tuple[Any, ...]]
    rollup_files: int
    raw_files: int
    note: str


_QUANTILES = (0.5, 0.95, 0.99)


def _hour_us(relative: str) -> int | None:
    """The hour a copy's file holds, from its partition folders."""
    date = hour = None
    for part in relative.split("/"):
        if part.startswith("date="):
            date = part.removeprefix("date=")
        elif part.startswith("hour="):
            hour = part.removeprefix("hour=")
    if date is None or hour is None:
        return None
    at = datetime.fromisoformat(f"{date}T{hour}:00:00+00:00")
    return (at - _EPOCH) // timedelta(microseconds=1)


def _touches(relative: str, lo: int, hi: int) -> bool:
    from conveyor.monitoring.columnar import HOUR_US

    hour = _hour_us(relative)
    return hour is None or (hour < hi and hour + HOUR_US > lo)


def grouped(
    monitor: MonitorQuery,
    con: duckdb.DuckDBPyConnection,
    snapshot: Snapshot,
    *,
    since_us: int,
    until_us: int,
    window_us: int,
    model: str | None,
    kinds: Sequence[str] = KINDS,
) -> Rolled | None:
    """The answered (``prediction``) and failed (``prediction.failed``) groups of
    ``[since_us, until_us)`` per model, version, arm and window, from the rollups for the
    whole minutes inside the range and raw events for the rest (``snapshot``'s files and
    the tail already loaded in ``_tail`` by :meth:`MonitorQuery.relation`).

    Answered: ``(requests, [p50, p95, p99], max_ms, cached, rows)``; failed:
    ``(errors_4xx, errors_5xx, shed, failed)``. None when the rollups cannot answer or
    would not help: a window that is not a whole number of minutes, no whole minute in the
    range, or no file of the range rolled up."""
    from conveyor.monitoring.compaction import copy_root
    from conveyor.monitoring.query import _sql_string, _view_sql

    if window_us % MINUTE_US or window_us <= 0:
        return None
    first = -(-since_us // MINUTE_US) * MINUTE_US  # the first whole minute
    last = until_us // MINUTE_US * MINUTE_US  # the end of the last one
    if first >= last:
        return None
    root = copy_root(monitor.project)
    wanted = tuple(f"events/kind={kind}/" for kind in kinds if kind in KINDS)
    if not any(f.startswith(wanted) and (root / rollup_path(f)).exists() for f in snapshot.files):
        return None  # nothing rolled up in the range: the exact query costs no more
    rollups = raw = 0
    out: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for kind in KINDS:
        if kind not in kinds:
            out[kind] = {}
            continue
        prefix = f"events/kind={kind}/"
        files = [f for f in snapshot.files if f.startswith(prefix)]
        rolled = [f for f in files if (root / rollup_path(f)).exists()]
        has = set(rolled)
        whole = [f for f in files if f not in has]
        # raw: files with no rollup and the tail over the whole range; the rolled files
        # over the partial minutes at either end
        parts = [_view_sql(str(root), whole, [kind], since_us, until_us)]
        for lo, hi in ((since_us, first), (last, until_us)):
            edge = [f for f in rolled if _touches(f, lo, hi)]
            if lo < hi and edge:
                parts.append(_view_sql(str(root), edge, [kind], lo, hi, tail=False))
                raw += len(edge)
        raw += len(whole)
        name = "_raw_" + kind.replace(".", "_")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS " + " UNION ALL BY NAME ".join(parts))
        # views take no parameters: the model as a literal
        model_raw = "" if model is None else f" WHERE subject = {_sql_string(model)}"
        raw_sql = _rollup_sql(
            kind, f"(SELECT * FROM {name}{model_raw})", f"time_us // {window_us} * {window_us}"
        )
        paths = [str(root / rollup_path(f)) for f in rolled]
        rollups += len(rolled)
        if kind == "prediction":
            table = con.sql(raw_sql).to_arrow_table()
            if paths:
                table = _concat(table, _read(paths, first, last, model, window_us))
            out[kind] = _answered(table, window_us)
            continue
        sources = [raw_sql]
        if paths:
            failed_rows = _DECODED.rows(paths, list(COLUMNS), first, last)
            con.register("_rolled_failed", failed_rows)
            model_rolled = "" if model is None else f" WHERE model = {_sql_string(model)}"
            sources.append(
                f"SELECT * REPLACE (minute_us // {window_us} * {window_us} AS minute_us) "
                f"FROM _rolled_failed{model_rolled}"
            )
        con.execute(f"CREATE OR REPLACE TEMP VIEW _parts AS {' UNION ALL '.join(sources)}")
        out[kind] = _failed(con)
    return Rolled(
        answered=out["prediction"],
        failed=out["prediction.failed"],
        rollup_files=rollups,
        raw_files=raw,
        note=(
            f"p50/p95/p99 from per-minute rollups of the compacted hours ({rollups} files) "
            f"and the raw events of the rest: each within {RELATIVE_ERROR:.0%} of the exact "
            "value (exact=True reads every event); counts are exact"
        ),
    )


def _key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (row[0], row[1], row[2], int(row[3]))


def _read(paths: list[str], first: int, last: int, model: str | None, window_us: int) -> pa.Table:
    """The rollup rows of ``paths`` for the minutes in ``[first, last)``, their
    ``minute_us`` turned into the window's start. Read with Arrow, not DuckDB: the lists
    come out as two flat arrays and their offsets, with no copy per bucket; and through
    :data:`_DECODED`, so a file is decoded once per process."""
    import pyarrow.compute as pc

    columns = [c for c in COLUMNS if c not in ("errors_4xx", "errors_5xx", "shed")]
    table = _DECODED.rows(paths, columns, first, last)
    assert table is not None  # paths is not empty
    if model is not None:
        table = table.filter(pc.equal(table["model"], model))
    start = pc.multiply(pc.divide(table["minute_us"], window_us), window_us)  # integer division
    return table.set_column(table.schema.get_field_index("minute_us"), "minute_us", start)


def _concat(a: pa.Table, b: pa.Table) -> pa.Table:
    import pyarrow as pa

    return pa.concat_tables([a.select(b.column_names).cast(b.schema), b]) if a.num_rows else b


def _answered(table: pa.Table, window_us: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """``(requests, [p50, p95, p99], max_ms, cached, rows)`` per (model, version, arm,
    window) of rollup rows (``minute_us``: the window's start, a multiple of ``window_us``;
    a group's rows in any order, several per window or one).

    In NumPy rather than SQL: a GROUP BY over millions of (window, group, bucket) rows
    took seconds. Groups are coded from the text columns' dictionaries, every bucket's
    count summed into a dense (segment, bucket) matrix with ``bincount`` (no sort), and
    every rank found by one ``searchsorted`` over the running counts of all segments
    lifted one above the other."""
    import numpy as np
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return {}
    table = table.combine_chunks()
    codes, names = [], []
    for column in ("model", "version", "arm"):
        encoded = pc.dictionary_encode(table[column], null_encoding="encode").combine_chunks()
        codes.append(np.asarray(encoded.indices, dtype=np.int64))
        names.append(encoded.dictionary.to_pylist())
    sizes = [len(n) for n in names]
    groups = sizes[0] * sizes[1] * sizes[2]
    window = np.asarray(table["minute_us"], dtype=np.int64)
    first = int(window.min())
    raw_segment = (window - first) // window_us * groups + (
        (codes[0] * sizes[1] + codes[1]) * sizes[2] + codes[2]
    )
    # a dense index of the segments present, without sorting
    present = np.zeros(int(raw_segment.max()) + 1, dtype=bool)
    present[raw_segment] = True
    index = np.cumsum(present) - 1
    row_segment = index[raw_segment]
    segments = int(index[-1]) + 1

    def summed(column: str) -> Any:
        values = table[column].chunk(0) if table[column].num_chunks else None
        data = np.asarray(pc.fill_null(values, 0), dtype=np.float64)
        return np.bincount(row_segment, weights=data, minlength=segments)

    requests, cached, rows = summed("n"), summed("cached"), summed("rows")
    has_rows = np.bincount(
        row_segment,
        weights=np.asarray(pc.is_valid(table["rows"]), dtype=np.float64),
        minlength=segments,
    )
    max_ms = np.full(segments, -np.inf)
    latest = np.asarray(pc.fill_null(table["max_ms"], -np.inf), dtype=np.float64)
    np.maximum.at(max_ms, row_segment, latest)
    # the exact quantile is at most the maximum, which the rollups hold exactly
    quantiles = np.minimum(_quantiles(table, row_segment, segments), max_ms[:, None])
    # back from a segment to (model, version, arm, window)
    where = np.flatnonzero(present)
    at_window = (where // groups * window_us + first).tolist()
    g = where % groups
    arm, rest = (g % sizes[2]).tolist(), g // sizes[2]
    version, model = (rest % sizes[1]).tolist(), (rest // sizes[1]).tolist()
    tops = [None if m == -np.inf else m for m in max_ms.tolist()]
    qs = [None if math.isnan(q[0]) else q for q in quantiles.tolist()]
    counted = [requests.tolist(), cached.tolist(), rows.tolist(), has_rows.tolist()]
    return {
        (names[0][model[i]], names[1][version[i]], names[2][arm[i]], at_window[i]): (
            int(counted[0][i]),
            qs[i],
            tops[i],
            int(counted[1][i]),
            int(counted[2][i]) if counted[3][i] else None,
        )
        for i in range(segments)
    }


#: The most (segment, bucket) cells summed at once (8 bytes each).
_CELLS = 16_000_000


def _quantiles(table: pa.Table, row_segment: Any, segments: int) -> Any:
    """p50/p95/p99 of each segment (a row each; NaN where it has no latency), from its
    rows' bucket lists."""
    import numpy as np
    import pyarrow.compute as pc

    buckets, counts = table["buckets"].chunk(0), table["counts"].chunk(0)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(buckets), 0), dtype=np.int64)
    estimates = np.full((segments, len(_QUANTILES)), np.nan)
    if not lengths.sum():
        return estimates
    segment = np.repeat(row_segment, lengths)
    k = np.asarray(pc.list_flatten(buckets), dtype=np.int64)
    n = np.asarray(pc.list_flatten(counts), dtype=np.float64)
    real = k != ZERO_KEY
    low = int(k[real].min()) - 1 if real.any() else 0  # the zero bucket comes first
    k = np.where(real, k, low) - low
    width = int(k.max()) + 1
    chunk = max(1, _CELLS // width)
    for start in range(0, segments, chunk):
        stop = min(segments, start + chunk)
        part = stop - start
        rows = (segment >= start) & (segment < stop) if chunk < segments else slice(None)
        dense = np.bincount(
            (segment[rows] - start) * width + k[rows], weights=n[rows], minlength=part * width
        )
        running = np.cumsum(dense.reshape(part, width), axis=1)
        totals = running[:, -1]
        # one increasing array: each segment's running counts lifted above the last one's
        lift = np.arange(part, dtype=np.float64) * (float(totals.max()) + 1.0)
        flat = (running + lift[:, None]).ravel()
        offsets = np.arange(part) * width
        for i, p in enumerate(_QUANTILES):
            h = np.maximum(totals - 1, 0) * p
            picks = []
            for rank in (np.floor(h), np.ceil(h)):
                at = np.minimum(np.searchsorted(flat, lift + rank, side="right"), flat.size - 1)
                bucket = at - offsets + low
                picks.append(
                    np.where(bucket == low, 0.0, 2.0 * np.exp(bucket * _LOG_GAMMA) / (GAMMA + 1.0))
                )
            value = picks[0] + (h - np.floor(h)) * (picks[1] - picks[0])
            estimates[start:stop, i] = np.where(totals > 0, value, np.nan)
    return estimates


def _failed(con: duckdb.DuckDBPyConnection) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    sql = """
        SELECT model, version, arm, minute_us, sum(errors_4xx), sum(errors_5xx), sum(shed),
               sum(n)
        FROM _parts GROUP BY ALL
    """
    return {_key(row): tuple(int(v or 0) for v in row[4:]) for row in con.execute(sql).fetchall()}
