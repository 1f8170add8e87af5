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

__all__ = ["read_arms", "read_shadow"]

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
