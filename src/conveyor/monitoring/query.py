"""Monitor queries: DuckDB SQL over the Parquet copy plus the log's newest events.

::

    monitor = project.monitoring                      # or MonitorQuery(project)
    report = monitor.latency("fraud", since=now - timedelta(hours=1))
    report.windows[0]   # {"model": "fraud", "version": "3", "arm": "champion",
                        #  "window": "2026-12-04T07:00:00+00:00", "requests": 6912,
                        #  "p50_ms": 1.9, "p95_ms": 4.1, "p99_ms": 7.7, ...}
    monitor.sql("SELECT count(*) FROM events", kinds=["prediction"], since=...)

A query reads, in one store transaction, the copy's checkpoint and the files listed
for the kinds and the time range asked (pruned by the hour and the times each file
holds); then the events with a seq above that checkpoint, from the log itself (the
*tail*: what compaction has not copied yet). Both are one relation, ``events``, with
the copy's columns (:mod:`.columnar`). So an answer is never staler than the log's own
flush, and no event is counted twice: a file is read only once it is listed, and it
is listed in the transaction that moves the checkpoint past its events.

The tail is read row by row from the log: keep compaction running (``monitoring.
compaction.cron``) so that it stays small; each answer says how long it was.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from conveyor.monitoring.data_quality import DataQualityReport
    from conveyor.monitoring.system_query import SystemReport
    from conveyor.project import Project

__all__ = ["ERRORS_RECORDED", "LatencyReport", "MonitorQuery", "Snapshot"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TAIL_PAGE = 200_000

#: Whether :meth:`MonitorQuery.latency` counts failed requests. It does not: it reads the
#: ``prediction`` events (requests answered) only, so its ``errors`` and ``error_rate`` are
#: null and a note says where they are: the server records each failed request as a
#: ``prediction.failed`` event, which :meth:`MonitorQuery.system` counts (4xx, 5xx, shed).
ERRORS_RECORDED = False

#: Answered requests per model, version, arm and window, from the relation ``{source}``
#: (positional: model, version, arm, window_us, requests, [p50, p95, p99], max, cached,
#: rows). The system monitors read the same groups from their own view.
LATENCY_GROUPS_SQL = """
SELECT subject AS model,
       subject_version AS version,
       arm,
       time_us // $window * $window AS window_us,
       count(*) AS requests,
       quantile_cont(latency_ms, [0.5, 0.95, 0.99]) AS q,
       max(latency_ms) AS max_ms,
       count_if(cached) AS cached,
       sum("rows") AS rows
FROM {source}
WHERE kind = 'prediction' AND time_us >= $since AND time_us < $until {model}
GROUP BY ALL
"""
_LATENCY_SQL = (
    LATENCY_GROUPS_SQL.replace("{source}", "events") + "ORDER BY window_us, model, version, arm\n"
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one query read: the checkpoint, the files listed, and how many events it read
    from the log past the checkpoint (the tail, every kind)."""

    checkpoint: int
    files: list[str]
    tail_events: int
    read_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "files": len(self.files),
            "tail_events": self.tail_events,
            "read_s": round(self.read_s, 4),
        }


@dataclass(frozen=True, slots=True)
class LatencyReport:
    """Latency percentiles and request counts per model, version, arm and window."""

    since: datetime
    until: datetime
    window: timedelta
    model: str | None
    windows: list[dict[str, Any]]
    snapshot: Snapshot
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "window_s": self.window.total_seconds(),
            "model": self.model,
            "windows": self.windows,
            "read": self.snapshot.to_dict(),
            "seconds": round(self.seconds, 4),
            "notes": self.notes,
        }


class MonitorQuery:
    """Queries over the event log's columnar copy and its tail (see the module)."""

    def __init__(self, project: Project) -> None:
        self.project = project

    @classmethod
    def for_project(cls, project: Project) -> MonitorQuery:
        return cls(project)

    def relation(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        kinds: Sequence[str],
        since: datetime,
        until: datetime,
        view: bool = True,
    ) -> Snapshot:
        """Define the view ``events`` on ``con``: the kinds' events with a time in
        ``[since, until)``, from the copy and the tail. With ``view=False``, only list the
        files and load the tail (``_tail``): a caller that defines its own views (per kind,
        :meth:`kind_view`, or over rollups) does not pay for DuckDB binding a view over
        every listed file."""
        from conveyor.events.filters import to_us
        from conveyor.monitoring.columnar import load_rows
        from conveyor.monitoring.compaction import copy_root, sql_log

        started = time.perf_counter()
        since_us, until_us = to_us(since, "since"), to_us(until, "until")
        if until_us <= since_us:
            raise InvalidInputError(
                f"until ({until.isoformat()}) must come after since ({since.isoformat()})",
                field="until",
            )
        kinds = _kinds(kinds)
        root = copy_root(self.project)
        checkpoint, files = self._listed(kinds, since_us, until_us)
        log = sql_log(self.project)
        tail: list[tuple[Any, ...]] = []
        after = checkpoint
        while True:
            # By seq alone, so the database walks its primary key from the checkpoint
            # (a kind or time filter may lead a planner to an index over the whole log);
            # DuckDB filters the tail's rows below.
            rows = log.scan(after=after, limit=_TAIL_PAGE)
            tail += rows
            if rows:
                after = int(rows[-1][0])
            if len(rows) < _TAIL_PAGE:
                break
        load_rows(tail, con, "_tail")
        if view:
            con.execute(
                "CREATE OR REPLACE TEMP VIEW events AS "
                + _view_sql(str(root), files, kinds, since_us, until_us)
            )
        return Snapshot(checkpoint, files, len(tail), time.perf_counter() - started)

    def kind_view(
        self,
        con: duckdb.DuckDBPyConnection,
        name: str,
        kind: str,
        snapshot: Snapshot,
        *,
        since: datetime,
        until: datetime,
    ) -> None:
        """Define the view ``name`` on ``con``: one kind's part of what :meth:`relation`
        read into ``snapshot`` (its files of that kind, and the tail already loaded), so
        a query over several kinds reads the log's tail once and each kind's files
        alone."""
        from conveyor.events.filters import to_us
        from conveyor.monitoring.compaction import copy_root

        if not name.isidentifier():
            raise InvalidInputError(f"view name {name!r} is not an identifier", field="name")
        prefix = f"events/kind={kind}/"
        files = [f for f in snapshot.files if f.startswith(prefix)]
        sql = _view_sql(
            str(copy_root(self.project)),
            files,
            _kinds([kind]),
            to_us(since, "since"),
            to_us(until, "until"),
        )
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")

    def sql(
        self,
        query: str,
        *,
        kinds: Sequence[str],
        since: datetime,
        until: datetime | None = None,
        params: dict[str, Any] | None = None,
    ) -> pa.Table:
        """Run ``query`` (DuckDB SQL over the view ``events``) and return its result."""
        import duckdb

        con = duckdb.connect()
        try:
            self.relation(con, kinds=kinds, since=since, until=until or _now())
            return con.sql(query, params=params).to_arrow_table()
        finally:
            con.close()

    def latency(
        self,
        model: str | None = None,
        *,
        since: datetime,
        until: datetime | None = None,
        window: timedelta = timedelta(minutes=1),
        exact: bool = False,
    ) -> LatencyReport:
        """Per model (or only ``model``), version, arm and ``window``: requests, latency
        p50/p95/p99 and max (ms), cached answers and rows, from ``prediction`` events.

        A window of whole minutes reads the per-minute rollups of the compacted hours
        (:mod:`.rollups`): counts and maxima exact, percentiles within
        :data:`~conveyor.monitoring.rollups.RELATIVE_ERROR` (1 %) of the exact value;
        ``exact=True`` reads every event."""
        import duckdb

        started = time.perf_counter()
        until = until or _now()
        window_us = window // timedelta(microseconds=1)
        if window_us < 1_000_000:
            raise InvalidInputError(
                f"window must be a second or longer, got {window}", field="window"
            )
        from conveyor.events.filters import to_us

        con = duckdb.connect()
        try:
            snapshot = self.relation(
                con, kinds=["prediction"], since=since, until=until, view=False
            )
            params: dict[str, Any] = {
                "window": window_us,
                "since": to_us(since, "since"),
                "until": to_us(until, "until"),
            }
            rolled = None
            if not exact:
                from conveyor.monitoring.rollups import grouped

                rolled = grouped(
                    self,
                    con,
                    snapshot,
                    since_us=params["since"],
                    until_us=params["until"],
                    window_us=window_us,
                    model=model,
                    kinds=("prediction",),
                )
            if rolled is None:
                self.kind_view(con, "events", "prediction", snapshot, since=since, until=until)
                clause = ""
                if model is not None:
                    clause, params["model"] = "AND subject = $model", model
                result = con.execute(_LATENCY_SQL.format(model=clause), params).fetchall()
            else:
                result = [
                    (*key, *value)
                    for key, value in sorted(rolled.answered.items(), key=_window_order)
                ]
        finally:
            con.close()
        windows = [_window_row(row) for row in result]
        notes = []
        if not ERRORS_RECORDED:
            notes.append(
                "errors and error_rate are null: latency reads answered requests only; "
                "MonitorQuery.system (GET /v1/monitor/system) counts the failed ones "
                "(prediction.failed: 4xx, 5xx, shed)"
            )
        if rolled is not None:
            notes.append(rolled.note)
        return LatencyReport(
            since=since,
            until=until,
            window=window,
            model=model,
            windows=windows,
            snapshot=snapshot,
            seconds=time.perf_counter() - started,
            notes=notes,
        )

    def system(
        self,
        model: str | None = None,
        *,
        since: datetime,
        until: datetime | None = None,
        window: timedelta = timedelta(minutes=1),
        exact: bool = False,
    ) -> SystemReport:
        """System monitors per model (or only ``model``), version, arm and ``window``:
        requests and their rate, latency, 4xx/5xx, shed load, cache hits, batch sizes,
        queue depth, CPU and memory (see :mod:`conveyor.monitoring.system_query`).
        Windows of whole minutes read the rollups as :meth:`latency` does (``exact=True``:
        every event)."""
        from conveyor.monitoring.system_query import system

        return system(self, model, since=since, until=until, window=window, exact=exact)

    def data_quality(
        self,
        dataset: str | None = None,
        *,
        since: datetime,
        until: datetime | None = None,
        window: timedelta = timedelta(hours=1),
    ) -> DataQualityReport:
        """Data-quality monitors of the data layer's ingest runs, per data set (or only
        ``dataset``) and ``window`` (see :mod:`conveyor.monitoring.data_quality`)."""
        from conveyor.monitoring.data_quality import data_quality

        return data_quality(self, dataset, since=since, until=until, window=window)

    def _listed(self, kinds: Sequence[str], since_us: int, until_us: int) -> tuple[int, list[str]]:
        """The checkpoint and the files that may hold the kinds' events in the range, read in
        one transaction (so they agree)."""
        import sqlalchemy as sa

        from conveyor.monitoring.columnar import HOUR_US
        from conveyor.monitoring.compaction import LOG
        from conveyor.monitoring.tables import CompactedFileRecord as F
        from conveyor.monitoring.tables import CompactionRecord as R

        with self.project.store.read() as session:
            checkpoint = session.execute(sa.select(R.last_seq).where(R.log == LOG)).scalar()
            paths = session.execute(
                sa.select(F.path)
                .where(
                    F.log == LOG,
                    F.kind.in_(list(kinds)),
                    F.hour_us > since_us - HOUR_US,
                    F.hour_us < until_us,
                    F.max_time_us >= since_us,
                    F.min_time_us < until_us,
                )
                .order_by(F.first_seq)
            ).scalars()
            return int(checkpoint or 0), list(paths)


def _window_order(item: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    """``ORDER BY window_us, model, version, arm`` (nulls last) of a group's key."""
    model, version, arm, at = item[0]
    return (at, *((v is None, v or "") for v in (model, version, arm)))


def _window_row(row: tuple[Any, ...]) -> dict[str, Any]:
    model, version, arm, window_us, requests, q, max_ms, cached, rows = row
    p50, p95, p99 = q if q is not None else (None, None, None)
    return {
        "model": model,
        "version": version,
        "arm": arm,
        "window": (_EPOCH + timedelta(microseconds=int(window_us))).isoformat(),
        "requests": int(requests),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": max_ms,
        "cached": int(cached),
        "rows": int(rows) if rows is not None else None,
        "errors": None,
        "error_rate": None,
    }


def _view_sql(
    root: str,
    files: Sequence[str],
    kinds: Sequence[str],
    since_us: int,
    until_us: int,
    *,
    tail: bool = True,
) -> str:
    """The kinds' events in ``[since_us, until_us)``: the listed files and the tail
    (``_tail``; not with ``tail=False``), with the copy's columns."""
    from pathlib import Path

    from conveyor.monitoring.columnar import EVENT_COLUMNS, PROMOTED

    columns = ", ".join(f'"{c}"' for c in (*EVENT_COLUMNS, *PROMOTED))
    listed = ", ".join(_sql_string(k) for k in kinds)
    where = f"kind IN ({listed}) AND time_us >= {since_us} AND time_us < {until_us}"
    parts = [f"SELECT {columns} FROM _tail WHERE {where}"] if tail else []
    if files:
        paths = ", ".join(_sql_string(str(Path(root) / f)) for f in files)
        # By name: files written before a column was promoted lack it, and their rows get
        # null there (the tail's SELECT always has every column).
        parts.insert(
            0,
            f"SELECT * FROM read_parquet([{paths}], union_by_name = true, "
            f"hive_partitioning = false) WHERE {where}",
        )
    if not parts:
        return f"SELECT {columns} FROM _tail WHERE FALSE"
    return " UNION ALL BY NAME ".join(parts)


def _kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    from conveyor.events.schema import check_kind

    if isinstance(kinds, str) or not kinds:
        raise InvalidInputError(
            f"kinds must be a non-empty list of event kinds, got {kinds!r}", field="kinds"
        )
    return tuple(check_kind(k, "kinds") for k in kinds)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _now() -> datetime:
    return datetime.now(UTC)
