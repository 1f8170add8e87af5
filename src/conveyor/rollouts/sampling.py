"""The two arms' traffic over a step's window, read from the monitoring query layer.

One DuckDB pass over the event log's columnar copy and its tail
(:meth:`conveyor.monitoring.query.MonitorQuery.relation`): per version, requests
(answered ``prediction`` and ``prediction.failed`` events), server errors (5xx), and
the answered requests' latencies and first numeric output as arrays. A shadow phase
reads the candidate's ``prediction.shadow`` events instead (its status, latency and
agreement with the primary's answer). The result is two :class:`ArmSample` for
:func:`conveyor.rollouts.analysis.analyze`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from conveyor.rollouts.analysis import ArmSample

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = ["read_arms", "read_quality", "read_shadow"]

_COUNTS_SQL = """
SELECT subject_version AS version,
       count(*) AS requests,
       count_if(kind = 'prediction.failed' AND status LIKE '5%') AS errors
FROM events
WHERE subject = $model AND time_us >= $since AND time_us < $until
  AND kind IN ('prediction', 'prediction.failed')
  AND subject_version IN ($stable, $candidate)
GROUP BY ALL
"""

_ANSWERED_SQL = """
SELECT subject_version = $candidate AS is_candidate,
       latency_ms,
       {output} AS output
FROM events
WHERE subject = $model AND kind = 'prediction' AND time_us >= $since AND time_us < $until
  AND subject_version IN ($stable, $candidate)
"""

# the first number of a model's output: [0.7] (one row), [[0.2, 0.8]] or 0.7
_OUTPUT = (
    "coalesce(TRY_CAST(json_extract_string(payload, '$.output[0]') AS DOUBLE), "
    "TRY_CAST(json_extract_string(payload, '$.output[0][0]') AS DOUBLE), "
    "TRY_CAST(json_extract_string(payload, '$.output') AS DOUBLE))"
)

_SHADOW_SQL = """
SELECT count(*) AS requests,
       count_if(status <> 'ok') AS errors,
       count_if(status = 'ok' AND json_extract_string(payload, '$.agree') = 'true') AS agree,
       list(latency_ms) FILTER (WHERE status = 'ok') AS latencies
FROM events
WHERE subject = $model AND kind = 'prediction.shadow' AND subject_version = $candidate
  AND time_us >= $since AND time_us < $until
"""


def _params(
    model: str, stable: int, candidate: int, since: datetime, until: datetime
) -> dict[str, Any]:
    from conveyor.events.filters import to_us

    return {
        "model": model,
        "stable": str(stable),
        "candidate": str(candidate),
        "since": to_us(since, "since"),
        "until": to_us(until, "until"),
    }


def read_arms(
    project: Project,
    model: str,
    *,
    stable: int,
    candidate: int,
    since: datetime,
    until: datetime,
    outputs: bool = True,
) -> tuple[ArmSample, ArmSample]:
    """``(canary, stable)`` over ``[since, until)``."""
    import duckdb

    from conveyor.monitoring.query import MonitorQuery

    con = duckdb.connect()
    try:
        MonitorQuery(project).relation(
            con, kinds=["prediction", "prediction.failed"], since=since, until=until
        )
        params = _params(model, stable, candidate, since, until)
        counts = {
            str(v): (int(n), int(e)) for v, n, e in con.execute(_COUNTS_SQL, params).fetchall()
        }
        sql = _ANSWERED_SQL.format(output=_OUTPUT if outputs else "NULL::DOUBLE")
        table = con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()
    is_candidate = table.column("is_candidate").to_numpy(zero_copy_only=False).astype(bool)
    latency = table.column("latency_ms").to_numpy(zero_copy_only=False).astype(np.float64)
    output = table.column("output").to_numpy(zero_copy_only=False).astype(np.float64)

    def arm(version: int, mask: np.ndarray) -> ArmSample:
        n, errors = counts.get(str(version), (0, 0))
        out = output[mask]
        return ArmSample(n, errors, latency[mask], out[~np.isnan(out)])

    return arm(candidate, is_candidate), arm(stable, ~is_candidate)


def read_shadow(
    project: Project,
    model: str,
    *,
    stable: int,
    candidate: int,
    since: datetime,
    until: datetime,
) -> tuple[ArmSample, ArmSample]:
    """``(shadow candidate, stable)``: the candidate's shadow answers, and the stable's
    own traffic over the same window."""
    import duckdb

    from conveyor.monitoring.query import MonitorQuery

    con = duckdb.connect()
    try:
        MonitorQuery(project).relation(con, kinds=["prediction.shadow"], since=since, until=until)
        params = _params(model, stable, candidate, since, until)
        del params["stable"]
        row = con.execute(_SHADOW_SQL, params).fetchone()
    finally:
        con.close()
    n, errors, agree, latencies = row if row is not None else (0, 0, 0, None)
    shadow = ArmSample(
        int(n), int(errors), np.asarray(latencies or [], dtype=np.float64), agree=int(agree)
    )
    _, primary = read_arms(
        project,
        model,
        stable=stable,
        candidate=candidate,
        since=since,
        until=until,
        outputs=False,
    )
    return shadow, primary


def read_quality(
    project: Project,
    model: str,
    *,
    versions: tuple[int, ...],
    since: datetime,
    until: datetime,
    metric: str | None = None,
) -> dict[int, tuple[str | None, float | None, float | None]]:
    """Per version: ``(metric, quality, business value mean)`` of the predictions made in
    ``[since, until)`` that have feedback, from monitoring's quality code (the metrics of
    :mod:`conveyor.checks.metrics`, one implementation); Nones without labels.

    One window spans the whole range (a window ~27 years wide, epoch-aligned, so the
    step's range falls in one), so each version has one row per arm; a metric over
    several arms (a flag and the weights) is their labelled-weighted mean.
    """
    from datetime import timedelta

    from conveyor.monitoring.quality import quality_report

    report = quality_report(
        project,
        model,
        since=since,
        until=until,
        window=timedelta(days=10_000),
        metrics=None if metric is None else [metric],
    )
    name = metric or (report.metrics[0] if report.metrics else None)
    out: dict[int, tuple[str | None, float | None, float | None]] = {}
    for version in versions:
        rows = [w for w in report.windows if w["version"] == str(version) and w["labelled"]]
        quality = _weighted(rows, name) if name else None
        business = _weighted(rows, "value_mean")
        out[version] = (name, quality, business)
    return out


def _weighted(rows: list[dict[str, Any]], key: str) -> float | None:
    pairs = [(r[key], r["labelled"]) for r in rows if r.get(key) is not None]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else None
