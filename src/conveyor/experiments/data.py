"""An experiment's per-arm data, read from the event log, as metrics at checkpoints.

The unit is a request routed to an arm. Predictions (``prediction`` events, which
carry the ``arm`` the router chose) and failed requests (``prediction.failed``) come
from the monitoring query layer (:class:`~conveyor.monitoring.query.MonitorQuery`);
feedback is joined to its prediction by monitoring's own join
(:func:`conveyor.monitoring.feedback_join.labelled`: by request id and row, or by
entity key and outcome time). Model metrics are computed per unit by the metrics
registry (:mod:`conveyor.checks.metrics`), one implementation for every report.

Metrics (:data:`METRIC_KINDS`):

- ``conversion`` (proportion): a request whose latest feedback label is truthy
  (1, true, "yes") or whose value is > 0; a request with no feedback did not convert;
- ``revenue`` (mean): the feedback's ``value`` summed over the request's rows, 0
  without feedback;
- model metrics on labelled requests: ``accuracy`` (proportion), ``mae``, ``mse``,
  ``brier``, ``log_loss`` (means, lower is better), the model's first output against
  the label;
- guardrails from the server's own events: ``error_rate`` (share of requests answered
  5xx) and ``p95_latency`` (share of answered requests slower than the control arm's
  95th percentile: 5 % in the control arm by construction, more in a slower arm).

Checkpoints are ``looks`` equal shares of the requests in time order; each metric is
cumulative at each one, so the sequential test sees every look a person could have
taken. (Feedback that arrived later is counted at the look of its prediction.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from conveyor.errors import InvalidInputError
from conveyor.experiments.analysis import MetricLooks
from conveyor.experiments.stats import Summary

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = ["METRIC_KINDS", "ArmData", "MetricSpec", "read_arms"]

#: metric -> (kind, higher is better, source, default mixture spread for a guardrail)
METRIC_KINDS: dict[str, tuple[str, bool, str, float | None]] = {
    "conversion": ("proportion", True, "feedback", 0.02),
    "revenue": ("mean", True, "feedback", None),
    "accuracy": ("proportion", True, "model", 0.02),
    "mae": ("mean", False, "model", None),
    "mse": ("mean", False, "model", None),
    "brier": ("mean", False, "model", None),
    "log_loss": ("mean", False, "model", None),
    "error_rate": ("proportion", False, "server", 0.01),
    "p95_latency": ("proportion", False, "server", 0.05),
}
PRIMARY_METRICS = ("conversion", "revenue", "accuracy", "mae", "mse", "brier", "log_loss")

_REQUESTS_SQL = """
SELECT request_id, arm, kind, time_us, latency_ms,
       kind = 'prediction.failed' AND status LIKE '5%' AS server_error
FROM events
WHERE subject = $model AND arm IN (SELECT unnest($arms))
  AND kind IN ('prediction', 'prediction.failed')
ORDER BY time_us, seq
"""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric as an experiment declares it: its name and the mixture spread of its
    sequential test (the primary's MDE; a guardrail's default or ``name:tau``)."""

    name: str
    tau: float | None = None

    @classmethod
    def parse(cls, text: str, *, primary: bool = False) -> MetricSpec:
        name, _, tau = text.strip().partition(":")
        known = PRIMARY_METRICS if primary else tuple(METRIC_KINDS)
        if name not in known:
            what = "primary metric" if primary else "guardrail"
            raise InvalidInputError(
                f"unknown {what} {name!r}; known: {', '.join(known)}", field="metric"
            )
        if not tau:
            return cls(name)
        try:
            value = float(tau)
        except ValueError:
            raise InvalidInputError(
                f"{text!r}: the spread after ':' is a number", field="metric"
            ) from None
        if not value > 0:
            raise InvalidInputError(f"{text!r}: the spread is > 0", field="metric")
        return cls(name, value)

    @property
    def kind(self) -> str:
        return METRIC_KINDS[self.name][0]

    @property
    def higher_is_better(self) -> bool:
        return METRIC_KINDS[self.name][1]


@dataclass(slots=True)
class ArmData:
    """Every unit of both arms, in time order: which arm, and each metric's outcome
    (NaN where the unit does not count for that metric)."""

    arm: np.ndarray  # 0 control, 1 treatment
    outcomes: dict[str, np.ndarray]
    counts: list[int]  # routed requests per arm (answered and failed)

    def looks(self, spec: MetricSpec, *, looks: int, tau: float) -> MetricLooks:
        """One metric, cumulative at ``looks`` equal shares of the units."""
        values = self.outcomes[spec.name]
        counted = ~np.isnan(values)
        arm, values = self.arm[counted], values[counted]
        cut = _cuts(arm.size, looks)

        def summary(which: int) -> Summary:
            mine = arm == which
            x = np.where(mine, values, 0.0)
            n = np.cumsum(mine)[cut] if arm.size else np.zeros(1)
            total = np.cumsum(x)[cut] if arm.size else np.zeros(1)
            squares = np.cumsum(x * x)[cut] if arm.size else np.zeros(1)
            return Summary(n.astype(np.float64), total, squares)

        return MetricLooks(
            spec.name,
            "proportion" if spec.kind == "proportion" else "mean",
            summary(0),
            summary(1),
            tau,
            spec.higher_is_better,
        )


def _cuts(size: int, looks: int) -> np.ndarray:
    if size == 0:
        return np.zeros(1, dtype=np.int64)
    ends = np.unique(np.ceil(np.linspace(0, size, looks + 1)[1:]).astype(np.int64))
    return ends - 1


def read_arms(
    project: Project,
    model: str,
    labels: Sequence[str],
    metrics: Sequence[str],
    *,
    since: datetime,
    until: datetime | None = None,
) -> ArmData:
    """The experiment's units since it started: ``labels[0]`` is the control arm."""
    import duckdb

    from conveyor.monitoring.query import MonitorQuery

    until = until or datetime.now(UTC) + timedelta(seconds=1)
    con = duckdb.connect()
    try:
        MonitorQuery(project).relation(
            con, kinds=["prediction", "prediction.failed"], since=since, until=until
        )
        table = con.execute(_REQUESTS_SQL, {"model": model, "arms": list(labels)}).fetchnumpy()
    finally:
        con.close()
    rid = np.asarray(table["request_id"], dtype=object)
    arm_label = np.asarray(table["arm"], dtype=object)
    kind = np.asarray(table["kind"], dtype=object)
    # a retried request id counts once: its first event
    ids = [r if r is not None else f"#{i}" for i, r in enumerate(rid)]
    _, first = np.unique(np.asarray(ids, dtype=object), return_index=True)
    keep = np.sort(first)
    rid, arm_label, kind = rid[keep], arm_label[keep], kind[keep]
    latency = np.asarray(table["latency_ms"], dtype=np.float64)[keep]
    server_error = np.asarray(table["server_error"], dtype=bool)[keep]
    index = {label: i for i, label in enumerate(labels)}
    arm = np.array([index[a] for a in arm_label], dtype=np.int8)
    counts = [int((arm == i).sum()) for i in range(len(labels))]
    answered = kind == "prediction"
    outcomes: dict[str, np.ndarray] = {}
    wanted = set(metrics)
    if "error_rate" in wanted:
        outcomes["error_rate"] = server_error.astype(np.float64)
    if "p95_latency" in wanted:
        control = latency[answered & (arm == 0)]
        threshold = float(np.quantile(control, 0.95)) if control.size else np.inf
        slow = np.where(answered, (latency > threshold).astype(np.float64), np.nan)
        outcomes["p95_latency"] = slow
    feedback = [m for m in wanted if METRIC_KINDS[m][2] in ("feedback", "model")]
    if feedback:
        outcomes.update(_feedback(project, model, since, until, rid, answered, feedback))
    # two arms compared: units of other arms (none in a two-arm experiment) are dropped
    two = arm <= 1
    return ArmData(arm[two], {k: v[two] for k, v in outcomes.items()}, counts)


def _truthy(label: Any, value: Any) -> float:
    if isinstance(label, bool):
        return float(label)
    if isinstance(label, int | float):
        return float(label > 0)
    if isinstance(label, str):
        return float(label.strip().lower() in ("1", "true", "yes", "y", "converted"))
    return float(value is not None and value > 0)


def _feedback(
    project: Project,
    model: str,
    since: datetime,
    until: datetime,
    rid: np.ndarray,
    answered: np.ndarray,
    metrics: Sequence[str],
) -> dict[str, np.ndarray]:
    from conveyor.checks.metrics import metric
    from conveyor.monitoring.feedback_join import labelled

    found = labelled(project, model, since=since, until=until)
    position = {r: i for i, r in enumerate(rid) if r is not None}
    n = rid.size
    out: dict[str, np.ndarray] = {}
    converted = np.zeros(n)
    revenue = np.zeros(n)
    has_label = np.zeros(n, dtype=bool)
    per_row: dict[str, list[tuple[int, Any, Any]]] = {}
    for i, request in enumerate(found.request_id):
        at = position.get(request)
        if at is None:
            continue
        label, value = found.label[i], found.value[i]
        converted[at] = max(converted[at], _truthy(label, value))
        revenue[at] += value if value is not None else 0.0
        if label is not None:
            has_label[at] = True
            per_row.setdefault("rows", []).append((at, label, found.output[i]))
    if "conversion" in metrics:
        out["conversion"] = np.where(answered, converted, np.nan)
    if "revenue" in metrics:
        out["revenue"] = np.where(answered, revenue, np.nan)
    rows = per_row.get("rows", [])
    for name in metrics:
        if METRIC_KINDS[name][2] != "model":
            continue
        values = np.full(n, np.nan)
        if rows:
            where = np.array([r[0] for r in rows])
            y = np.array([_number(r[1]) for r in rows], dtype=np.float64)
            p = np.array([_number(_first(r[2])) for r in rows], dtype=np.float64)
            ok = ~np.isnan(y) & ~np.isnan(p)
            if ok.any():
                # one call: the registry's metric is vectorised over leading axes, so each
                # labelled row is its own "resample" of one and gets its own value
                scored = np.asarray(metric(name)(y[ok][:, None], p[ok][:, None]), np.float64)
                sums = np.zeros(n)
                rows_at = np.zeros(n)
                np.add.at(sums, where[ok], scored)
                np.add.at(rows_at, where[ok], 1)
                with np.errstate(invalid="ignore"):
                    values = np.where(rows_at > 0, sums / rows_at, np.nan)
        out[name] = values
    return out


def _first(output: Any) -> Any:
    while isinstance(output, list | tuple) and output:
        output = output[0]
    if isinstance(output, dict) and output:
        return next(iter(output.values()))
    return output


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
