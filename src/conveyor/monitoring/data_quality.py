"""Data-quality monitors: the data layer's ingest runs, as trends per data set.

::

    report = project.monitoring.data_quality("transactions", since=now - timedelta(days=1))
    report.windows[0]
    # {"dataset": "transactions", "window": "2026-12-04T07:00:00+00:00", "runs": 4,
    #  "rows": 40000, "null_rate": 0.0031, "nulls": {"amount": 120, ...},
    #  "worst_null_column": "amount", "worst_null_rate": 0.003,
    #  "out_of_range_rate": 0.0012, "failed_rate": 0.004, "quarantined": 160,
    #  "quarantine_rate": 0.004, "schema_changes": [], "newest_row": "...",
    #  "freshness_s": 95.0}

Read from the event log (its columnar copy and tail) like every monitor:
``data.validated`` (each ingested batch: its ``quality`` holds rows, nulls per column,
rows failing each range check, the schema change against the last accepted version
and the newest row's time, when a ``freshness`` expectation names the time column)
and ``data.quarantined`` (rows set aside). Per data set and window:

- ``null_rate``: null cells over all cells of the window's batches; ``worst_null_rate``
  the highest share of one column (``worst_null_column``);
- ``out_of_range_rate``: rows outside a ``between`` expectation's range over rows (per
  batch, the range check failing the most rows);
- ``failed_rate``: rows breaking any error-severity row expectation over rows;
- ``quarantine_rate``: rows quarantined over rows ingested;
- ``schema_changes``: each batch whose columns were added, removed or retyped;
- ``freshness_s``: how old the newest source row seen so far is at the end of the
  window (or at ``until``): the lag grows while no new rows arrive.

:data:`METRICS` holds the alertable ones as functions ``(project, dataset, since,
until) -> float | None`` (``dataset`` None: the worst data set).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.monitoring.query import MonitorQuery, Snapshot
    from conveyor.project import Project

__all__ = ["DATA_KINDS", "METRICS", "DataQualityReport", "data_quality"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DATA_KINDS = ("data.validated", "data.quarantined")
#: How far back the freshness metric looks for the newest row.
FRESHNESS_LOOKBACK = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class DataQualityReport:
    """Data-quality monitors per data set and window."""

    since: datetime
    until: datetime
    window: timedelta
    dataset: str | None
    windows: list[dict[str, Any]]
    snapshot: Snapshot
    seconds: float
    notes: list[str] = field(default_factory=list)

    def latest(self, dataset: str) -> dict[str, Any] | None:
        """The last window of ``dataset`` (None when it had no run in the range)."""
        rows = [w for w in self.windows if w["dataset"] == dataset]
        return rows[-1] if rows else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "window_s": self.window.total_seconds(),
            "dataset": self.dataset,
            "windows": self.windows,
            "read": self.snapshot.to_dict(),
            "seconds": round(self.seconds, 4),
            "notes": self.notes,
        }


def data_quality(
    monitor: MonitorQuery,
    dataset: str | None = None,
    *,
    since: datetime,
    until: datetime | None = None,
    window: timedelta = timedelta(hours=1),
) -> DataQualityReport:
    """See the module: :meth:`MonitorQuery.data_quality`."""
    import duckdb

    from conveyor.events.filters import to_us

    started = time.perf_counter()
    until = until or datetime.now(UTC)
    if not isinstance(window, timedelta) or window < timedelta(seconds=1):
        raise InvalidInputError(f"window must be a second or longer, got {window}", field="window")
    window_us = window // timedelta(microseconds=1)
    until_us = to_us(until, "until")
    con = duckdb.connect()
    try:
        snapshot = monitor.relation(con, kinds=DATA_KINDS, since=since, until=until)
        clause, params = "", {}
        if dataset is not None:
            clause, params = "WHERE subject = $dataset", {"dataset": dataset}
        events = con.execute(
            f"SELECT subject, time_us, kind, payload FROM events {clause} ORDER BY seq", params
        ).fetchall()
    finally:
        con.close()
    windows: dict[tuple[str, int], dict[str, Any]] = {}
    legacy = 0
    for name, at_us, kind, text in events:
        name = name or ""
        at = int(at_us) // window_us * window_us
        row = windows.get((name, at))
        if row is None:
            row = windows[(name, at)] = _empty(name, at)
        payload = orjson.loads(text)
        if kind == "data.quarantined":
            row["quarantined"] += int(payload.get("rows") or 0)
            continue
        quality = payload.get("quality")
        row["runs"] += 1
        row["failed_rows"] += int(payload.get("failed_rows") or 0)
        if not isinstance(quality, dict):
            legacy += 1  # written before batches recorded their quality
            continue
        rows = int(quality.get("rows") or 0)
        row["rows"] += rows
        row["cells"] += rows * int(quality.get("columns") or 0)
        for column, nulls in (quality.get("nulls") or {}).items():
            row["nulls"][column] = row["nulls"].get(column, 0) + int(nulls)
            row["_column_rows"][column] = row["_column_rows"].get(column, 0) + rows
        ranges = quality.get("out_of_range") or {}
        row["out_of_range"] += max((int(v) for v in ranges.values()), default=0)
        row["_range_rows"] += rows if ranges else 0
        if quality.get("schema_changed"):
            row["schema_changes"].append(
                {"time": _iso(int(at_us)), **(quality.get("schema_change") or {})}
            )
        newest = quality.get("newest_row")
        if isinstance(newest, str) and (row["newest_row"] is None or newest > row["newest_row"]):
            row["newest_row"] = newest
    out = _finish(windows, window_us, until_us)
    notes = []
    if legacy:
        notes.append(
            f"{legacy} batches were validated before data.validated recorded their quality: "
            "their rows are not in the rates"
        )
    return DataQualityReport(
        since=since,
        until=until,
        window=window,
        dataset=dataset,
        windows=out,
        snapshot=snapshot,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def _empty(name: str, at: int) -> dict[str, Any]:
    return {
        "dataset": name,
        "window_us": at,
        "runs": 0,
        "rows": 0,
        "cells": 0,
        "nulls": {},
        "_column_rows": {},
        "out_of_range": 0,
        "_range_rows": 0,
        "failed_rows": 0,
        "quarantined": 0,
        "schema_changes": [],
        "newest_row": None,
    }


def _finish(
    windows: dict[tuple[str, int], dict[str, Any]], window_us: int, until_us: int
) -> list[dict[str, Any]]:
    out = []
    newest_seen: dict[str, str] = {}
    for (name, at), row in sorted(windows.items(), key=lambda item: (item[0][1], item[0][0])):
        rows, cells = row["rows"], row.pop("cells")
        column_rows = row.pop("_column_rows")
        range_rows = row.pop("_range_rows")
        worst_column, worst = None, None
        for column, nulls in row["nulls"].items():
            share = nulls / column_rows[column] if column_rows.get(column) else None
            if share is not None and (worst is None or share > worst):
                worst_column, worst = column, share
        if row["newest_row"] is not None and row["newest_row"] > newest_seen.get(name, ""):
            newest_seen[name] = row["newest_row"]
        newest = newest_seen.get(name)
        end_us = min(at + window_us, until_us)
        freshness = None
        if newest is not None:
            newest_us = (datetime.fromisoformat(newest) - _EPOCH) // timedelta(microseconds=1)
            freshness = max(0.0, (end_us - newest_us) / 1e6)
        out.append(
            {
                "dataset": name,
                "window": _iso(row.pop("window_us")),
                "runs": row["runs"],
                "rows": rows,
                "null_rate": sum(row["nulls"].values()) / cells if cells else None,
                "nulls": row["nulls"],
                "worst_null_column": worst_column,
                "worst_null_rate": worst,
                "out_of_range": row["out_of_range"],
                "out_of_range_rate": row["out_of_range"] / range_rows if range_rows else None,
                "failed_rows": row["failed_rows"],
                "failed_rate": row["failed_rows"] / rows if rows else None,
                "quarantined": row["quarantined"],
                "quarantine_rate": row["quarantined"] / rows if rows else None,
                "schema_changes": row["schema_changes"],
                "newest_row": newest,
                "freshness_s": freshness,
            }
        )
    return out


def _iso(at_us: int) -> str:
    return (_EPOCH + timedelta(microseconds=int(at_us))).isoformat()


# -- alertable metrics --------------------------------------------------------------


def _whole(
    project: Project, dataset: str | None, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """One window per data set spanning ``[since, until)``."""
    from conveyor.monitoring.query import MonitorQuery

    span = until - since
    if span < timedelta(seconds=1):
        raise InvalidInputError("until must be at least a second after since", field="until")
    # One window from since: align it by starting the epoch-aligned window grid there.
    report = data_quality(
        MonitorQuery(project), dataset, since=since, until=until, window=_covering(since, until)
    )
    return report.windows


def _covering(since: datetime, until: datetime) -> timedelta:
    """A window length whose epoch-aligned window holding ``since`` also holds ``until``."""
    since_s = int((since - _EPOCH).total_seconds())
    until_s = int((until - _EPOCH).total_seconds()) + 1
    length = max(1, until_s - since_s)
    while since_s // length != (until_s - 1) // length:
        length *= 2
    return timedelta(seconds=length)


def _rate(key: str, numerator: str, denominator: str) -> Callable[..., float | None]:
    def metric(
        project: Project, dataset: str | None, since: datetime, until: datetime
    ) -> float | None:
        totals: dict[str, list[int]] = {}
        for w in _whole(project, dataset, since, until):
            got = totals.setdefault(w["dataset"], [0, 0])
            if numerator == "nulls":
                got[0] += sum(w["nulls"].values())
                got[1] += round(w["rows"] * len(w["nulls"]))
            else:
                got[0] += w[numerator]
                got[1] += w[denominator]
        rates = [n / d for n, d in totals.values() if d]
        return max(rates) if rates else None

    metric.__name__ = key.replace(".", "_")
    metric.__doc__ = f"``{key}`` over ``[since, until)``: the worst data set's when none is named."
    return metric


def freshness_s(
    project: Project, dataset: str | None, since: datetime, until: datetime
) -> float | None:
    """``data.freshness_s`` at ``until``: the age of the newest source row recorded by an
    ingest in the last 90 days (the oldest data set's, when none is named)."""
    windows = _whole(project, dataset, min(since, until - FRESHNESS_LOOKBACK), until)
    ages = [w["freshness_s"] for w in windows if w["freshness_s"] is not None]
    return max(ages) if ages else None


def schema_changed(
    project: Project, dataset: str | None, since: datetime, until: datetime
) -> float | None:
    """``data.schema_changed``: how many batches changed the schema in the range."""
    return float(sum(len(w["schema_changes"]) for w in _whole(project, dataset, since, until)))


#: Alertable data-quality metrics by their canonical name.
METRICS: dict[str, Callable[..., float | None]] = {
    "data.null_rate": _rate("data.null_rate", "nulls", "rows"),
    "data.out_of_range_rate": _rate("data.out_of_range_rate", "out_of_range", "rows"),
    "data.quarantine_rate": _rate("data.quarantine_rate", "quarantined", "rows"),
    "data.freshness_s": freshness_s,
    "data.schema_changed": schema_changed,
}
