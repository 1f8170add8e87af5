"""Shadow analysis: how a shadow version's answers compare with the ones callers got.

::

    analysis = shadow_analysis(project, "house", since=now - timedelta(hours=1))
    analysis.report.verdict                 # passed | passed with warnings | failed
    v = analysis.versions[0]
    v.agreement_rate                        # share of rows that agree (see below)
    v.differences["quantiles"]["p95"]       # regression: shadow - primary, per row
    v.latency["shadow"]["p95_ms"], v.latency["primary"]["p95_ms"]
    v.disagreements[0]                      # the largest, with the request's input rows

Read from the ``prediction.shadow`` events of ``[since, until)`` (the monitoring query
layer: the columnar copy plus the log's tail, :mod:`.query`), each joined by its request
id to the ``prediction`` event of the answer given: its latency (the primary's, of the
same requests) and, when the request was sampled (``serving.payload_sample_rate``), its
input rows. A shadow copy that disagrees carries the request's rows itself (``input``,
at most :data:`conveyor.serving.app.SHADOW_INPUT_ROWS` of them), so the largest
disagreements have their inputs without sampling every request.

Per shadow version, row by row (an answer of several rows is split as feedback is):

- ``task``: ``classification`` when rows are labels (strings, integers, booleans) or
  probability vectors (compared by their arg-max), ``regression`` when they are numbers,
  ``other`` otherwise (compared with :func:`conveyor.serving.shadow.compare`);
- ``agreement_rate``: labels equal (classification), numbers within the serving
  tolerance (regression, :mod:`conveyor.serving.shadow`);
- ``differences`` (regression): ``shadow - primary``: mean, mean absolute, standard
  deviation, quantiles and a 10-bin histogram;
- ``latency``: p50/p95/p99 of the shadow copies and of the primary answers to the same
  requests, and the ratio of the p95s;
- ``errors``: shadow copies that failed, and the most frequent error messages;
- ``disagreements``: the ``top`` rows farthest apart (a label flip first, then by the
  absolute difference), with the request id, both answers and the input.

The :class:`~conveyor.checks.result.Report` (subject ``model:NAME``, kind ``shadow``)
holds per version the agreement, error-rate and latency checks against the thresholds
given; no shadow traffic at all is a warning saying so, never a pass.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError
from conveyor.serving.shadow import ATOL, RTOL

if TYPE_CHECKING:
    from conveyor.checks.result import Report
    from conveyor.project import Project

__all__ = [
    "MAX_ERROR_RATE",
    "MAX_LATENCY_RATIO",
    "MIN_AGREEMENT",
    "ShadowAnalysis",
    "ShadowVersion",
    "compare_rows",
    "shadow_analysis",
]

#: Defaults of the report's checks (each can be given to :func:`shadow_analysis`).
MIN_AGREEMENT = 0.95
MAX_ERROR_RATE = 0.01
MAX_LATENCY_RATIO = 1.5
_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_BINS = 10

_SHADOWS_SQL = """
SELECT s.subject_version, s.request_id, s.time_us, s.status, s.latency_ms, s.payload,
       p.latency_ms
FROM shadow s
LEFT JOIN (
    SELECT request_id, any_value(latency_ms) AS latency_ms
    FROM pred WHERE subject = $model AND request_id IS NOT NULL
    GROUP BY request_id
) p ON p.request_id = s.request_id
WHERE s.subject = $model {version}
ORDER BY s.time_us, s.seq
"""


@dataclass(slots=True)
class ShadowVersion:
    """The analysis of one shadow version (see the module)."""

    version: str
    primary_versions: list[int]
    copies: int
    rows: int
    errors: int
    error_rate: float | None
    error_messages: dict[str, int]
    task: str | None
    agreement_rate: float | None
    agreeing_rows: int
    compared_rows: int
    differences: dict[str, Any] | None
    latency: dict[str, Any]
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "primary_versions": self.primary_versions,
            "copies": self.copies,
            "rows": self.rows,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "error_messages": self.error_messages,
            "task": self.task,
            "agreement_rate": self.agreement_rate,
            "agreeing_rows": self.agreeing_rows,
            "compared_rows": self.compared_rows,
            "differences": self.differences,
            "latency": self.latency,
            "disagreements": self.disagreements,
        }


@dataclass(slots=True)
class ShadowAnalysis:
    """Every shadow version of a model over a window, and the report holding them."""

    model: str
    since: datetime
    until: datetime
    versions: list[ShadowVersion]
    report: Report
    read: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def version(self, number: int | str) -> ShadowVersion:
        for v in self.versions:
            if v.version == str(number):
                return v
        from conveyor.errors import NotFoundError

        raise NotFoundError(
            f"no shadow traffic for {self.model}@{number} in the window",
            kind="shadow",
            id=f"{self.model}@{number}",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "versions": [v.to_dict() for v in self.versions],
            "report": self.report.to_dict(),
            "read": self.read,
            "seconds": round(self.seconds, 4),
            "notes": self.notes,
        }


def shadow_analysis(
    project: Project,
    model: str,
    version: int | str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    top: int = 10,
    min_agreement: float = MIN_AGREEMENT,
    max_error_rate: float = MAX_ERROR_RATE,
    max_latency_ratio: float = MAX_LATENCY_RATIO,
) -> ShadowAnalysis:
    """Analyse ``model``'s shadow copies in ``[since, until)`` (default: the last hour),
    of every shadow version or only ``version``; see the module."""
    import duckdb
    import orjson

    from conveyor.monitoring.query import MonitorQuery

    started = time.perf_counter()
    if not model:
        raise InvalidInputError("a model name is required", field="model")
    if top < 0 or top > 1000:
        raise InvalidInputError(f"top must be within 0..1000, got {top}", field="top")
    _fraction(min_agreement, "min_agreement")
    _fraction(max_error_rate, "max_error_rate")
    if not max_latency_ratio > 0:
        raise InvalidInputError(
            f"max_latency_ratio must be above 0, got {max_latency_ratio}",
            field="max_latency_ratio",
        )
    version_text = None if version is None else _version(version)
    until = until or datetime.now(UTC)
    since = since or until - timedelta(hours=1)
    monitor = MonitorQuery(project)
    con = duckdb.connect()
    try:
        snapshot = monitor.relation(
            con, kinds=("prediction", "prediction.shadow"), since=since, until=until
        )
        monitor.kind_view(con, "shadow", "prediction.shadow", snapshot, since=since, until=until)
        monitor.kind_view(con, "pred", "prediction", snapshot, since=since, until=until)
        params: dict[str, Any] = {"model": model}
        clause = ""
        if version_text is not None:
            clause = "AND s.subject_version = $version"
            params["version"] = version_text
        rows = con.execute(_SHADOWS_SQL.format(version=clause), params).fetchall()
        by_version: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_version.setdefault(str(row[0]), []).append(row)
        versions = [
            _analyse(v, group, top, orjson.loads)
            for v, group in sorted(by_version.items(), key=lambda kv: _order(kv[0]))
        ]
        notes = _inputs(con, model, versions, orjson.loads)
    finally:
        con.close()
    report = _report(
        model, version_text, versions, min_agreement, max_error_rate, max_latency_ratio
    )
    return ShadowAnalysis(
        model=model,
        since=since,
        until=until,
        versions=versions,
        report=report,
        read=snapshot.to_dict(),
        seconds=time.perf_counter() - started,
        notes=notes,
    )


# -- one version ---------------------------------------------------------------------------


def compare_rows(primary: Any, shadow: Any) -> tuple[str, bool, float | None, float]:
    """One row of each answer: ``(task, agree, signed difference, how far apart)``.

    The task is ``classification`` (labels, or probability vectors compared by their
    arg-max), ``regression`` (numbers within the serving tolerance) or ``other``. The
    difference is ``shadow - primary`` for regression rows, else None; how far apart
    ranks disagreements (a label flip counts 1 more than any change of probabilities).
    """
    if type(primary) is float and type(shadow) is float:  # the common case first
        if primary == shadow:  # infinities included
            return "regression", True, 0.0, 0.0
        diff = shadow - primary
        if math.isnan(diff):
            same = math.isnan(primary) and math.isnan(shadow)
            return "regression", same, None, 0.0 if same else math.inf
        return "regression", abs(diff) <= ATOL + RTOL * abs(primary), diff, abs(diff)
    if _is_label(primary) and _is_label(shadow):
        agree = primary == shadow and type(primary) is type(shadow)
        return "classification", agree, None, 0.0 if agree else 1.0
    if _is_vector(primary) and _is_vector(shadow) and len(primary) == len(shadow) > 1:
        flip = _argmax(primary) != _argmax(shadow)
        spread = max(abs(float(x) - float(y)) for x, y in zip(primary, shadow, strict=True))
        return "classification", not flip, None, spread + (1.0 if flip else 0.0)
    from conveyor.serving.shadow import compare

    compared = compare(primary, shadow)
    apart = compared.max_abs_diff
    if apart is None:
        apart = 0.0 if compared.agree else 1.0
    return "other", compared.agree, None, float(apart)


def _analyse(version: str, rows: list[tuple[Any, ...]], top: int, loads: Any) -> ShadowVersion:
    import numpy as np

    from conveyor.monitoring.feedback_join import _per_row

    primaries: set[int] = set()
    errors = 0
    messages: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    agreeing = compared = total_rows = 0
    diffs: list[float] = []
    shadow_ms: list[float] = []
    primary_ms: list[float] = []
    # (how far apart, order, the item's parts): items are made for the top ones only.
    worst: list[tuple[float, int, tuple[Any, ...]]] = []
    for _, request_id, time_us, status, latency_ms, payload_text, primary_latency in rows:
        payload = loads(payload_text) if payload_text else {}
        if isinstance(payload.get("primary_version"), int):
            primaries.add(payload["primary_version"])
        if latency_ms is not None:
            shadow_ms.append(float(latency_ms))
        if primary_latency is not None:
            primary_ms.append(float(primary_latency))
        if (status or payload.get("status")) != "ok":
            errors += 1
            messages[str(payload.get("error") or status or "unknown")[:200]] += 1
            continue
        primary_rows = _per_row(payload.get("primary_output"))
        shadow_rows = _per_row(payload.get("output"))
        total_rows += len(primary_rows)
        if len(primary_rows) != len(shadow_rows):  # another shape: every row disagrees
            compared += len(primary_rows)
            tasks["other"] += len(primary_rows)
            parts = (request_id, time_us, None, payload, primary_rows, shadow_rows, None)
            worst.append((math.inf, len(worst), parts))
            continue
        for i, (a, b) in enumerate(zip(primary_rows, shadow_rows, strict=True)):
            task, agree, diff, apart = compare_rows(a, b)
            tasks[task] += 1
            compared += 1
            agreeing += agree
            if diff is not None:
                diffs.append(diff)
            if not agree:
                worst.append((apart, len(worst), (request_id, time_us, i, payload, a, b, diff)))
        if len(worst) > 4 * max(top, 1) + 1024:  # keep the list short on long windows
            worst = heapq.nlargest(top, worst, key=_apart)
    worst = heapq.nlargest(top, worst, key=_apart)
    copies = len(rows)
    differences = None
    if diffs:
        d = np.asarray(diffs, dtype=np.float64)
        finite = d[np.isfinite(d)]
        counts: list[int] = []
        edges: list[float] = []
        if finite.size:
            try:
                made = np.histogram(finite, bins=_BINS)
                counts, edges = [int(c) for c in made[0]], [float(e) for e in made[1]]
            except ValueError:  # a range too narrow for 10 bins (differences all but equal)
                counts, edges = [int(finite.size)], [float(finite.min()), float(finite.max())]
        differences = {
            "count": int(d.size),
            "mean": float(finite.mean()) if finite.size else None,
            "mean_abs": float(np.abs(finite).mean()) if finite.size else None,
            "std": float(finite.std()) if finite.size else None,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "quantiles": (
                {
                    f"p{round(q * 100)}": float(v)
                    for q, v in zip(_QUANTILES, np.quantile(finite, _QUANTILES), strict=True)
                }
                if finite.size
                else {}
            ),
            "histogram": {"edges": edges, "counts": counts},
        }
    shadow_latency = _percentiles(shadow_ms)
    primary_latency = _percentiles(primary_ms)
    ratio = None
    if shadow_latency["p95_ms"] is not None and primary_latency["p95_ms"]:
        ratio = shadow_latency["p95_ms"] / primary_latency["p95_ms"]
    return ShadowVersion(
        version=version,
        primary_versions=sorted(primaries),
        copies=copies,
        rows=total_rows,
        errors=errors,
        error_rate=errors / copies if copies else None,
        error_messages=dict(messages.most_common(5)),
        task=tasks.most_common(1)[0][0] if tasks else None,
        agreement_rate=agreeing / compared if compared else None,
        agreeing_rows=agreeing,
        compared_rows=compared,
        differences=differences,
        latency={
            "shadow": shadow_latency,
            "primary": primary_latency,
            "p95_ratio": ratio,
            "primary_joined": len(primary_ms),
        },
        disagreements=[_item(*parts) for _, _, parts in worst],
    )


def _item(
    request_id: str | None,
    time_us: int,
    row: int | None,
    payload: dict[str, Any],
    primary: Any,
    shadow: Any,
    diff: float | None,
) -> dict[str, Any]:
    carried = payload.get("input")
    value = None
    if isinstance(carried, list):
        value = carried if row is None else (carried[row] if row < len(carried) else None)
    return {
        "request_id": request_id,
        "time": (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=time_us)).isoformat(),
        "row": row,
        "primary_version": payload.get("primary_version"),
        "primary": primary,
        "shadow": shadow,
        "difference": diff,
        "input": value,
        "input_from": None if value is None else "prediction.shadow",
    }


def _inputs(con: Any, model: str, versions: list[ShadowVersion], loads: Any) -> list[str]:
    """Fill the disagreements' missing inputs from the sampled ``prediction`` events."""
    missing = {
        d["request_id"]
        for v in versions
        for d in v.disagreements
        if d["input"] is None and d["request_id"] is not None
    }
    found: dict[str, list[Any]] = {}
    if missing:
        con.execute("CREATE OR REPLACE TEMP TABLE _wanted (request_id VARCHAR)")
        con.executemany("INSERT INTO _wanted VALUES (?)", [[r] for r in sorted(missing)])
        for request_id, text in con.execute(
            "SELECT request_id, json_extract(payload, '$.input') FROM pred "
            "WHERE subject = $model AND request_id IN (SELECT request_id FROM _wanted)",
            {"model": model},
        ).fetchall():
            rows = loads(text) if text else None
            if isinstance(rows, list):
                found[request_id] = rows
    unknown = 0
    for v in versions:
        for d in v.disagreements:
            if d["input"] is not None:
                continue
            rows = found.get(d["request_id"])
            if rows is not None:
                row = d["row"]
                d["input"] = rows if row is None else (rows[row] if row < len(rows) else None)
                d["input_from"] = "prediction"
            if d["input"] is None:
                unknown += 1
    if unknown:
        return [
            f"{unknown} disagreements have no input: their prediction events were not "
            "sampled (serving.payload_sample_rate) and their shadow events predate the "
            "input field"
        ]
    return []


# -- the report ----------------------------------------------------------------------------


def _report(
    model: str,
    version: str | None,
    versions: Sequence[ShadowVersion],
    min_agreement: float,
    max_error_rate: float,
    max_latency_ratio: float,
) -> Report:
    from conveyor.checks.result import CheckResult, Report

    report = Report(f"model:{model}", kind="shadow", subject_version=version)
    if not versions:
        which = f"{model}@{version}" if version else model
        report.add(
            CheckResult(
                "shadow.traffic",
                False,
                0,
                ">= 1 shadow copy",
                f"no prediction.shadow event for {which} in the window: nothing to judge "
                "(give the route a shadow version: conveyor route set MODEL with a policy "
                'holding "shadow": [N])',
                severity="warning",
            )
        )
        return report
    for v in versions:
        name = f"shadow@{v.version}"
        rate = v.agreement_rate
        if rate is None:
            report.add(
                CheckResult(
                    f"{name}.agreement",
                    False,
                    None,
                    min_agreement,
                    f"no shadow copy answered ({v.errors} failed): agreement unmeasured",
                    severity="warning",
                )
            )
        else:
            report.add(
                CheckResult(
                    f"{name}.agreement",
                    rate >= min_agreement,
                    round(rate, 6),
                    min_agreement,
                    f"{v.agreeing_rows} of {v.compared_rows} rows agree ({v.task}: "
                    + (
                        "labels equal"
                        if v.task == "classification"
                        else "numbers within the serving tolerance"
                    )
                    + f") over {v.copies} copies",
                )
            )
        assert v.error_rate is not None  # a version is listed because it has copies
        report.add(
            CheckResult(
                f"{name}.errors",
                v.error_rate <= max_error_rate,
                round(v.error_rate, 6),
                max_error_rate,
                f"{v.errors} of {v.copies} shadow copies failed"
                + (f"; most often: {next(iter(v.error_messages))}" if v.error_messages else ""),
            )
        )
        ratio = v.latency["p95_ratio"]
        shadow_p95 = v.latency["shadow"]["p95_ms"]
        primary_p95 = v.latency["primary"]["p95_ms"]
        if ratio is None:
            report.add(
                CheckResult(
                    f"{name}.latency_p95",
                    False,
                    shadow_p95,
                    None,
                    "the primary's latency of the same requests is unknown (their "
                    "prediction events are outside the window): not compared",
                    severity="warning",
                )
            )
        else:
            report.add(
                CheckResult(
                    f"{name}.latency_p95",
                    ratio <= max_latency_ratio,
                    round(ratio, 4),
                    max_latency_ratio,
                    f"shadow p95 {shadow_p95:.2f} ms against the primary's {primary_p95:.2f} ms "
                    "on the same requests (ratio)",
                )
            )
    return report


# -- helpers -------------------------------------------------------------------------------


def _apart(entry: tuple[float, int, tuple[Any, ...]]) -> tuple[float, int]:
    """Farthest apart first; between equals, the earliest."""
    return entry[0], -entry[1]


def _percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None}
    import numpy as np

    p50, p95, p99 = (float(x) for x in np.quantile(np.asarray(values), (0.5, 0.95, 0.99)))
    return {"count": len(values), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99}


def _is_label(value: Any) -> bool:
    return isinstance(value, (str, bool, int))


def _is_vector(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    )


def _argmax(values: list[Any]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def _order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def _version(version: int | str) -> str:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(
            f"version must be a version number (1, 2...), got {version!r}", field="version"
        )
    return str(int(text))


def _fraction(value: float, name: str) -> None:
    if not 0 <= value <= 1:
        raise InvalidInputError(f"{name} must be within 0..1, got {value}", field=name)
