"""System monitors: traffic, latency, errors, cache, batches, queues, CPU and memory.

::

    report = project.monitoring.system("fraud", since=now - timedelta(hours=1))
    report.windows[0]
    # {"model": "fraud", "version": "3", "arm": "champion",
    #  "window": "2026-12-04T07:00:00+00:00", "requests": 6930, "answered": 6912,
    #  "requests_per_s": 115.5, "p50_ms": 1.9, "p95_ms": 4.1, "p99_ms": 7.7,
    #  "errors_4xx": 12, "errors_5xx": 6, "error_rate": 0.0026, "server_error_rate": 0.00087,
    #  "availability": 0.99913, "shed": 4, "cache_hit_ratio": 0.074, "mean_batch_rows": 2.1,
    #  "queue_depth": 3, "cpu_percent": 41.0, "rss_mib": 388.2}
    report.processes     # per window and worker process: cpu_percent, rss_mib, queue_depth

DuckDB over three kinds of the event log (its columnar copy and its tail, read once,
:meth:`MonitorQuery.relation`): ``prediction`` (a request answered), ``prediction.failed``
(a request that failed: its HTTP status and error code; written by the model server's
routes) and ``serving.sample`` (every worker's periodic sample of itself,
:mod:`conveyor.monitoring.system`).

Per model, version, arm and window: ``requests`` are the answered and the failed ones;
``error_rate`` is the share of 4xx and 5xx among them, ``server_error_rate`` the share
of 5xx, ``availability`` one minus that; ``shed`` counts the requests refused because a
batch queue was full (503 ``overloaded``). A request that failed before a version was
chosen (an unknown model, bad input, no key) has no version and arm: its row has
``version`` and ``arm`` null. Latency percentiles are over answered requests, as
:meth:`~MonitorQuery.latency` computes them. ``requests_per_s`` divides by the part of
the window inside ``[since, until)``.

``queue_depth`` (the most rows waiting, summed over workers) and ``mean_batch_rows``
come from the samples of the version; ``cpu_percent`` (100 = one core) and ``rss_mib``
are the whole server's (every worker process summed) in that window, on every row of
the window; null where nothing was sampled.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError
from conveyor.monitoring.query import LATENCY_GROUPS_SQL

if TYPE_CHECKING:
    import duckdb

    from conveyor.monitoring.query import MonitorQuery, Snapshot
    from conveyor.project import Project

__all__ = ["METRICS", "SYSTEM_KINDS", "SystemReport", "system", "system_summary"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The kinds system monitors read.
SYSTEM_KINDS = ("prediction", "prediction.failed", "serving.sample")

_ANSWERED_SQL = LATENCY_GROUPS_SQL.replace("{source}", "answered")

_FAILED_SQL = """
SELECT subject AS model,
       subject_version AS version,
       arm,
       time_us // $window * $window AS window_us,
       count_if(status LIKE '4%') AS errors_4xx,
       count_if(status LIKE '5%') AS errors_5xx,
       count_if(code = 'overloaded') AS shed,
       count(*) AS failed
FROM failed
WHERE kind = 'prediction.failed' AND time_us >= $since AND time_us < $until {model}
GROUP BY ALL
"""

_VERSION_SHAPE = (
    '[{"model": "VARCHAR", "version": "VARCHAR", "queue_rows": "BIGINT", '
    '"batches": "BIGINT", "batch_rows": "BIGINT"}]'
)
SAMPLE_SHAPE = (
    '{"pid": "BIGINT", "host": "VARCHAR", "cpu_percent": "DOUBLE", "rss_mib": "DOUBLE", '
    '"queue_depth": "BIGINT", "batches": "BIGINT", "batch_rows": "BIGINT", "shed": "BIGINT", '
    '"versions": ' + _VERSION_SHAPE + "}"
)

#: The samples of the range, their payloads parsed once into a struct (both queries below
#: read it).
_SAMPLES = (
    """
CREATE OR REPLACE TEMP TABLE samples AS
SELECT time_us // $window * $window AS window_us,
       from_json(payload, '"""
    + SAMPLE_SHAPE
    + """') AS p
FROM sampled
WHERE kind = 'serving.sample' AND time_us >= $since AND time_us < $until
"""
)

_PROCESSES_SQL = """
SELECT window_us,
       p.host AS host,
       p.pid AS pid,
       count(*) AS samples,
       avg(p.cpu_percent) AS cpu_percent,
       max(p.rss_mib) AS rss_mib,
       max(p.queue_depth) AS queue_depth,
       sum(p.batches) AS batches,
       sum(p.batch_rows) AS batch_rows,
       sum(p.shed) AS shed
FROM samples
GROUP BY ALL
ORDER BY window_us, host, pid
"""

_VERSIONS_SQL = """
WITH v AS (
    SELECT window_us, p.host AS host, p.pid AS pid, unnest(p.versions) AS one FROM samples
),
per_worker AS (
    SELECT window_us, host, pid, one.model AS model, one.version AS version,
           max(one.queue_rows) AS queue_rows, sum(one.batches) AS batches,
           sum(one.batch_rows) AS batch_rows
    FROM v GROUP BY ALL
)
SELECT window_us, model, version, sum(queue_rows) AS queue_depth,
       sum(batches) AS batches, sum(batch_rows) AS batch_rows
FROM per_worker WHERE TRUE {model}
GROUP BY ALL
"""


@dataclass(frozen=True, slots=True)
class SystemReport:
    """System monitors per model, version, arm and window, and per worker process."""

    since: datetime
    until: datetime
    window: timedelta
    model: str | None
    windows: list[dict[str, Any]]
    processes: list[dict[str, Any]]
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
            "processes": self.processes,
            "read": self.snapshot.to_dict(),
            "seconds": round(self.seconds, 4),
            "notes": self.notes,
        }


def system(
    monitor: MonitorQuery,
    model: str | None = None,
    *,
    since: datetime,
    until: datetime | None = None,
    window: timedelta = timedelta(minutes=1),
    exact: bool = False,
) -> SystemReport:
    """See the module: :meth:`MonitorQuery.system`."""
    import duckdb

    from conveyor.events.filters import to_us

    started = time.perf_counter()
    until = until or datetime.now(UTC)
    window_us = _window_us(window)
    since_us, until_us = to_us(since, "since"), to_us(until, "until")
    params: dict[str, Any] = {"window": window_us, "since": since_us, "until": until_us}
    con = duckdb.connect()
    try:
        # The tail is read once; then one view per kind over that kind's files alone (a
        # scan of every kind's files would open prediction files to find the samples),
        # each defined only when the rollups cannot answer in its place (binding a view
        # reads every listed file's footer).
        snapshot = monitor.relation(con, kinds=SYSTEM_KINDS, since=since, until=until, view=False)

        def kind_view(view: str, kind: str) -> None:
            monitor.kind_view(con, view, kind, snapshot, since=since, until=until)

        parsed = None
        if not exact:
            from conveyor.monitoring.rollups import samples_sql

            parsed = samples_sql(monitor, con, snapshot, since_us=since_us, until_us=until_us)
        if parsed is None:
            kind_view("sampled", "serving.sample")
            con.execute(_SAMPLES, params)
        else:  # the payloads parsed at compaction (the tail's here)
            # a view (the window as a literal: views take no parameters), not a table:
            # the two queries below read the registered samples with no copy
            con.execute(
                "CREATE OR REPLACE TEMP VIEW samples AS "
                f"SELECT time_us // {int(window_us)} * {int(window_us)} AS window_us, p "
                f"FROM ({parsed})"
            )
        processes = _process_rows(con, params)
        per_version = _version_rows(con, params, model)
        rolled = None
        if not exact:
            from conveyor.monitoring.rollups import grouped

            rolled = grouped(
                monitor,
                con,
                snapshot,
                since_us=since_us,
                until_us=until_us,
                window_us=window_us,
                model=model,
            )
        if rolled is None:
            kind_view("failed", "prediction.failed")
            kind_view("answered", "prediction")
            failed = _grouped(con, _FAILED_SQL, params, model)
            answered = _grouped(con, _ANSWERED_SQL, params, model)
        else:
            failed, answered = rolled.failed, rolled.answered
    finally:
        con.close()
    windows = _request_rows(answered, failed, since_us, until_us, window_us)
    per_window: dict[int, dict[str, Any]] = {}
    for p in processes:
        whole = per_window.setdefault(p["window_us"], {"cpu_percent": 0.0, "rss_mib": 0.0})
        whole["cpu_percent"] += p["cpu_percent"] or 0.0
        whole["rss_mib"] += p["rss_mib"] or 0.0
    for row in windows:
        at = row.pop("window_us")
        sampled = per_version.get((at, row["model"], row["version"]))
        row["queue_depth"] = sampled["queue_depth"] if sampled else None
        row["mean_batch_rows"] = (
            sampled["batch_rows"] / sampled["batches"] if sampled and sampled["batches"] else None
        )
        server = per_window.get(at)
        row["cpu_percent"] = round(server["cpu_percent"], 2) if server else None
        row["rss_mib"] = round(server["rss_mib"], 2) if server else None
    for p in processes:
        p["window"] = _iso(p.pop("window_us"))
    notes = [] if rolled is None else [rolled.note]
    if not processes:
        notes.append(
            "no serving.sample in the range: queue_depth, mean_batch_rows, cpu_percent and "
            "rss_mib are null (a server samples itself every monitoring.system."
            "sample_interval_s)"
        )
    return SystemReport(
        since=since,
        until=until,
        window=window,
        model=model,
        windows=windows,
        processes=processes,
        snapshot=snapshot,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def system_summary(
    monitor: MonitorQuery,
    model: str | None = None,
    *,
    since: datetime,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The system monitors of ``[since, until)`` as one window, for one model (or all):
    the canonical metric names alert rules use (``requests_per_s``, ``latency_p95_ms``,
    ``error_rate``, ``server_error_rate``, ``availability``, ``shed_rate``,
    ``cache_hit_ratio``...). A rate with no request is None."""
    import duckdb

    from conveyor.events.filters import to_us

    until = until or datetime.now(UTC)
    since_us, until_us = to_us(since, "since"), to_us(until, "until")
    con = duckdb.connect()
    try:
        monitor.relation(con, kinds=SYSTEM_KINDS[:2], since=since, until=until)
        clause = "" if model is None else "AND subject = $model"
        params: dict[str, Any] = {"since": since_us, "until": until_us}
        if model is not None:
            params["model"] = model
        row = con.execute(
            f"""
            SELECT count(*),
                   count(*) FILTER (WHERE kind = 'prediction'),
                   quantile_cont(latency_ms, [0.5, 0.95, 0.99])
                       FILTER (WHERE kind = 'prediction'),
                   count(*) FILTER (WHERE kind = 'prediction.failed' AND status LIKE '4%'),
                   count(*) FILTER (WHERE kind = 'prediction.failed' AND status LIKE '5%'),
                   count(*) FILTER (WHERE kind = 'prediction.failed' AND code = 'overloaded'),
                   count(*) FILTER (WHERE kind = 'prediction' AND cached)
            FROM events WHERE time_us >= $since AND time_us < $until {clause}
            """,
            params,
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    requests, answered, q, e4, e5, shed, cached = row
    p50, p95, p99 = q if q is not None else (None, None, None)
    span = (until_us - since_us) / 1e6
    return {
        "model": model,
        "requests": int(requests),
        "requests_per_s": requests / span,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_p99_ms": p99,
        "errors_4xx": int(e4),
        "errors_5xx": int(e5),
        "error_rate": (e4 + e5) / requests if requests else None,
        "server_error_rate": e5 / requests if requests else None,
        "availability": 1 - e5 / requests if requests else None,
        "shed": int(shed),
        "shed_rate": shed / requests if requests else None,
        "cache_hit_ratio": cached / answered if answered else None,
    }


def _grouped(
    con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any], model: str | None
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """(model, version, arm, window_us) -> the rest of the row."""
    clause = ""
    args = dict(params)
    if model is not None:
        clause, args["model"] = "AND subject = $model", model
    return {
        (row[0], row[1], row[2], int(row[3])): row[4:]
        for row in con.execute(sql.format(model=clause), args).fetchall()
    }


def _request_rows(
    answered: dict[tuple[Any, ...], tuple[Any, ...]],
    failed: dict[tuple[Any, ...], tuple[Any, ...]],
    since_us: int,
    until_us: int,
    window_us: int,
) -> list[dict[str, Any]]:
    out = []
    keys = sorted(
        set(answered) | set(failed),
        key=lambda k: (
            k[3],
            k[0] or "",
            k[1] is not None,
            k[1] or "",
            k[2] is not None,
            k[2] or "",
        ),
    )
    for key in keys:
        name, version, arm, at = key
        n, q, max_ms, cached, n_rows = answered.get(key, (0, None, None, 0, None))
        e4, e5, shed, failures = failed.get(key, (0, 0, 0, 0))
        requests = n + failures
        p50, p95, p99 = q if q is not None else (None, None, None)
        covered = (min(at + window_us, until_us) - max(at, since_us)) / 1e6
        out.append(
            {
                "model": name,
                "version": version,
                "arm": arm,
                "window": _iso(at),
                "window_us": at,
                "requests": int(requests),
                "answered": int(n),
                "requests_per_s": requests / covered if covered > 0 else None,
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
                "max_ms": max_ms,
                "errors_4xx": int(e4),
                "errors_5xx": int(e5),
                "error_rate": (e4 + e5) / requests,
                "server_error_rate": e5 / requests,
                "availability": 1 - e5 / requests,
                "shed": int(shed),
                "cached": int(cached),
                "cache_hit_ratio": cached / n if n else None,
                "rows": int(n_rows) if n_rows is not None else None,
            }
        )
    return out


def _process_rows(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> list[dict[str, Any]]:
    result = con.execute(_PROCESSES_SQL)
    names = [d[0] for d in result.description]
    rows = []
    for values in result.fetchall():
        row = dict(zip(names, values, strict=True))
        row["window_us"] = int(row["window_us"])
        for key in ("samples", "queue_depth", "batches", "batch_rows", "shed", "pid"):
            if row[key] is not None:
                row[key] = int(row[key])
        row["mean_batch_rows"] = row["batch_rows"] / row["batches"] if row["batches"] else None
        rows.append(row)
    return rows


def _version_rows(
    con: duckdb.DuckDBPyConnection, params: dict[str, Any], model: str | None
) -> dict[tuple[int, str, str], dict[str, Any]]:
    clause = ""
    args: dict[str, Any] = {}
    if model is not None:
        clause, args["model"] = "AND model = $model", model
    found = {}
    for at, name, version, depth, batches, batch_rows in con.execute(
        _VERSIONS_SQL.replace("{model}", clause), args
    ).fetchall():
        found[(int(at), name, version)] = {
            "queue_depth": int(depth) if depth is not None else None,
            "batches": int(batches or 0),
            "batch_rows": int(batch_rows or 0),
        }
    return found


def _window_us(window: timedelta) -> int:
    if not isinstance(window, timedelta):
        raise InvalidInputError(f"window must be a timedelta, got {window!r}", field="window")
    window_us = window // timedelta(microseconds=1)
    if window_us < 1_000_000:
        raise InvalidInputError(f"window must be a second or longer, got {window}", field="window")
    return window_us


@functools.lru_cache(maxsize=4096)
def _iso(at_us: int) -> str:
    """A window's start as ISO text (cached: a day's report names each window once per
    model, version and arm)."""
    return (_EPOCH + timedelta(microseconds=int(at_us))).isoformat()


# -- alertable metrics --------------------------------------------------------------


def _metric(name: str, key: str) -> Callable[..., float | None]:
    def metric(project: Project, model: str | None, since: datetime, until: datetime) -> Any:
        from conveyor.monitoring.query import MonitorQuery

        value = system_summary(MonitorQuery(project), model, since=since, until=until)[key]
        return None if value is None else float(value)

    metric.__name__ = name
    metric.__doc__ = f"``{name}`` of ``model`` (every model: None) over ``[since, until)``."
    return metric


#: The system monitors alert rules name, as functions ``(project, model, since, until)
#: -> float | None`` (None: no request in the range).
METRICS: dict[str, Callable[..., float | None]] = {
    name: _metric(name, name)
    for name in (
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "error_rate",
        "server_error_rate",
        "availability",
        "requests_per_s",
        "shed_rate",
        "cache_hit_ratio",
    )
}
