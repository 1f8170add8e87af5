"""Quality gates: a metric floor on the hold-out set, and the comparison with the champion.

The champion comparison follows MLflow's ``MetricThreshold`` exactly
(``mlflow.models.evaluation.validation._validate``):

- ``threshold``: the candidate's value must be ``>= threshold`` (greater is
  better) or ``<= threshold`` (lower is better);
- ``min_absolute_change``: candidate ``>= champion + min_absolute_change``
  (greater is better) or ``<= champion - min_absolute_change``;
- ``min_relative_change``: ``(candidate - champion) / champion >=
  min_relative_change`` (greater is better) or ``(champion - candidate) /
  champion >=`` it; when the champion's value is 0 the relative check falls
  back to "strictly better by 1e-10";
- every threshold given must pass (they combine with AND);
- without a champion, a change threshold cannot be judged and fails
  ("missing baseline"); ``no_champion="warn"`` makes that a warning instead,
  for a first model. A value ``threshold`` is still checked.

The absolute check adds the change to the champion's value in floats and
compares the two sides as :class:`decimal.Decimal`, as MLflow does: a
candidate exactly on the bound can miss it by the float sum's rounding
(``0.8 + 0.05`` is ``0.8500000000000001``), as in MLflow. The detail adds a
paired bootstrap confidence interval of the difference (candidate minus
champion): the hold-out rows are resampled once per resample and both
models are scored on the same rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from conveyor.checks.metrics import Metric, metric
from conveyor.checks.resample import counts_of
from conveyor.checks.result import CheckResult, Severity
from conveyor.errors import InvalidInputError
from conveyor.training.gates.context import GateContext

if TYPE_CHECKING:
    from collections.abc import Callable

    from conveyor.config import QualitySLO

__all__ = ["BootstrapInterval", "bootstrap_difference", "champion_comparison", "metric_floor"]

#: Most resample-by-row elements scored at once (bounds the memory of a bootstrap).
_CHUNK_ELEMENTS = 4_000_000


def metric_floor(
    slo: QualitySLO | None = None,
    *,
    metric_name: str | None = None,
    floor: float | None = None,
    direction: Literal["maximize", "minimize"] | None = None,
) -> Callable[[GateContext], CheckResult]:
    """A gate holding the candidate's hold-out metric to a floor (or a ceiling).

    The metric, floor and direction come from ``slo`` (a ``QualitySLO``), or
    are given; with neither, the gate reads ``context.slos.quality``.
    """
    if slo is not None and (metric_name is not None or floor is not None):
        raise InvalidInputError("pass a QualitySLO or metric_name and floor, not both", field="slo")
    if slo is None and (metric_name is None) != (floor is None):
        raise InvalidInputError("metric_name and floor go together", field="floor")
    if metric_name is not None:
        metric(metric_name)  # unknown names fail when the gate is built, not when it runs
    if floor is not None:
        _finite(floor, "floor")

    def metric_floor_gate(ctx: GateContext) -> CheckResult:
        name, bound, way = _floor_terms(ctx, slo, metric_name, floor, direction)
        m = metric(name)
        observed = m(ctx.y(), ctx.predictions("model", m.needs))
        met = (observed >= bound) if way == "maximize" else (observed <= bound)
        op = ">=" if way == "maximize" else "<="
        n = len(ctx.y())
        if math.isnan(observed):
            detail = f"{name} is undefined on the {n} hold-out rows (a single class?)"
            met = False
        else:
            verdict = "meets" if met else "misses"
            detail = (
                f"{name} on {n} hold-out rows is {observed:.4g}: "
                f"{verdict} the floor {op} {bound:.4g}"
            )
        return CheckResult(
            name=f"quality.{name}",
            passed=bool(met),
            observed=observed,
            threshold={"floor": bound, "direction": way},
            detail=detail,
        )

    return metric_floor_gate


def _floor_terms(
    ctx: GateContext,
    slo: QualitySLO | None,
    metric_name: str | None,
    floor: float | None,
    direction: str | None,
) -> tuple[str, float, str]:
    if slo is None and metric_name is None:
        slo = ctx.slos.quality if ctx.slos is not None else None
        if slo is None:
            raise InvalidInputError(
                "no quality floor: give metric_floor(slo) or metric_name and floor, "
                "or put slos.quality in the project spec",
                field="slos.quality",
            )
    if slo is not None:
        return slo.metric, slo.floor, direction or slo.direction
    assert metric_name is not None and floor is not None
    return metric_name, floor, direction or metric(metric_name).direction


@dataclass(frozen=True, slots=True)
class BootstrapInterval:
    """A paired bootstrap interval of ``metric(candidate) - metric(champion)``."""

    difference: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    seed: int

    def describe(self, name: str) -> str:
        return (
            f"{self.confidence:.0%} paired bootstrap interval of the {name} difference: "
            f"[{self.low:+.4g}, {self.high:+.4g}] ({self.n_resamples} resamples, seed {self.seed})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
        }


def bootstrap_difference(
    metric_: str | Metric,
    y: Any,
    candidate: Any,
    champion: Any,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Percentile interval of the metric difference over paired resamples of the rows.

    Each resample draws row indices once and scores both models on them, so
    what the two models share (hard rows, easy rows) cancels out.
    Resamples where the metric is undefined (one class only) are left out.
    """
    import numpy as np

    m = metric(metric_)
    if not isinstance(n_resamples, int) or n_resamples < 10:
        raise InvalidInputError(
            f"n_resamples must be an integer >= 10, got {n_resamples!r}", field="n_resamples"
        )
    if not 0 < confidence < 1:
        raise InvalidInputError(
            f"confidence must be between 0 and 1, got {confidence!r}", field="confidence"
        )
    y_arr = np.asarray(y, dtype=np.float64).reshape(-1)
    a = np.asarray(candidate, dtype=np.float64).reshape(-1)
    b = np.asarray(champion, dtype=np.float64).reshape(-1)
    n = len(y_arr)
    if n == 0 or len(a) != n or len(b) != n:
        raise InvalidInputError(
            f"bootstrap needs one prediction per row from each model: {n} rows, "
            f"{len(a)} candidate and {len(b)} champion predictions",
            field="predictions",
        )
    if "ranking" in m.tasks:
        raise InvalidInputError(
            f"metric {m.name!r} scores queries, not rows: the paired bootstrap resamples rows, "
            "so a ranking metric cannot be compared this way",
            field="metric",
        )
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_ELEMENTS // n)
    # The count-weighted form is the binary and regression one; other tasks copy rows.
    binary_or_values = m.task_of(y_arr, a) in ("binary", "regression")
    weighted = m.weighted if binary_or_values else None
    diffs = []
    for start in range(0, n_resamples, per_chunk):
        idx = rng.integers(0, n, size=(min(per_chunk, n_resamples - start), n))
        if weighted is not None:
            counts = counts_of(idx, n)
            diffs.append(weighted(y_arr, a, counts) - weighted(y_arr, b, counts))
        else:  # a metric without a count-weighted form: score copies of the resampled rows
            ys = y_arr[idx]
            diffs.append(np.asarray(m(ys, a[idx])) - np.asarray(m(ys, b[idx])))
    diff = np.concatenate(diffs)
    diff = diff[~np.isnan(diff)]
    point = float(m(y_arr, a)) - float(m(y_arr, b))
    if len(diff) == 0:
        return BootstrapInterval(point, math.nan, math.nan, confidence, n_resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(diff, [tail, 1 - tail])
    return BootstrapInterval(point, float(low), float(high), confidence, n_resamples, seed)


def champion_comparison(
    metric_name: str,
    *,
    min_absolute_change: float | None = None,
    min_relative_change: float | None = None,
    greater_is_better: bool | None = None,
    threshold: float | None = None,
    no_champion: Literal["fail", "warn"] = "fail",
    require_significant: bool = False,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Callable[[GateContext], CheckResult]:
    """A gate comparing the candidate with ``context.champion`` (MLflow semantics, see above).

    ``greater_is_better`` defaults to the metric's own direction.
    ``require_significant`` also asks the bootstrap interval of the
    difference to lie entirely on the better side of zero.
    """
    m = metric(metric_name)
    if threshold is None and min_absolute_change is None and min_relative_change is None:
        raise InvalidInputError(
            "champion_comparison needs threshold, min_absolute_change or min_relative_change "
            "(as MLflow's MetricThreshold does)",
            field="threshold",
        )
    if (
        min_absolute_change is not None
        and not _finite(min_absolute_change, "min_absolute_change") > 0
    ):
        raise InvalidInputError(
            f"min_absolute_change must be a positive number (as in MLflow), "
            f"got {min_absolute_change!r}",
            field="min_absolute_change",
        )
    if min_relative_change is not None and not (
        0 <= _finite(min_relative_change, "min_relative_change") <= 1
    ):
        raise InvalidInputError(
            f"min_relative_change is a fraction between 0 and 1, got {min_relative_change!r}",
            field="min_relative_change",
        )
    if threshold is not None:
        _finite(threshold, "threshold")
    if greater_is_better is not None and not isinstance(greater_is_better, bool):
        raise InvalidInputError(
            f"greater_is_better must be True, False or None, got {greater_is_better!r}",
            field="greater_is_better",
        )
    if no_champion not in ("fail", "warn"):
        raise InvalidInputError(
            f"no_champion must be 'fail' or 'warn', got {no_champion!r}", field="no_champion"
        )
    better_up = m.greater_is_better if greater_is_better is None else greater_is_better
    bounds = {
        "threshold": threshold,
        "min_absolute_change": min_absolute_change,
        "min_relative_change": min_relative_change,
        "greater_is_better": better_up,
    }
    name = f"champion.{m.name}"

    def champion_comparison_gate(ctx: GateContext) -> CheckResult:
        y = ctx.y()
        cand_pred = ctx.predictions("model", m.needs)
        candidate = float(m(y, cand_pred))
        failures, passes = _value_threshold(m.name, candidate, threshold, better_up)
        wants_change = min_absolute_change is not None or min_relative_change is not None
        if ctx.champion is None:
            observed: dict[str, Any] = {"candidate": candidate, "champion": None}
            if wants_change:
                failures.append(
                    f"no champion to compare with, so the change in {m.name} cannot be judged"
                )
                # A missed value threshold is an error even when a missing champion is not.
                value_missed = len(failures) > 1
                severity: Severity = (
                    "warning" if no_champion == "warn" and not value_missed else "error"
                )
                detail = "; ".join(failures + passes)
                return CheckResult(name, False, observed, bounds, detail, severity)
            return CheckResult(name, not failures, observed, bounds, "; ".join(failures + passes))
        champ_pred = ctx.predictions("champion", m.needs)
        champion = float(m(y, champ_pred))
        more_fail, more_pass = _change_checks(
            m.name, candidate, champion, min_absolute_change, min_relative_change, better_up
        )
        failures += more_fail
        passes += more_pass
        interval = bootstrap_difference(
            m, y, cand_pred, champ_pred, n_resamples=n_resamples, confidence=confidence, seed=seed
        )
        notes = [interval.describe(m.name)]
        if require_significant:
            bound = interval.low if better_up else -interval.high
            if not bound > 0:
                failures.append(
                    f"the interval does not exclude no improvement in {m.name} "
                    "(require_significant)"
                )
        observed = {
            "candidate": candidate,
            "champion": champion,
            "difference": candidate - champion,
            "interval": interval.to_dict(),
        }
        detail = "; ".join(failures + passes + notes)
        return CheckResult(name, not failures, observed, bounds, detail)

    return champion_comparison_gate


def _value_ok(value: float, threshold: float, better_up: bool) -> bool:
    return value >= threshold if better_up else value <= threshold


def _value_threshold(
    name: str, candidate: float, threshold: float | None, better_up: bool
) -> tuple[list[str], list[str]]:
    if threshold is None:
        return [], []
    op = ">=" if better_up else "<="
    text = f"candidate {name} {candidate:.4g} against the threshold {op} {threshold:.4g}"
    if _value_ok(candidate, threshold, better_up):
        return [], [f"{text}: met"]
    return [f"{text}: missed"], []


def _change_checks(
    name: str,
    candidate: float,
    champion: float,
    min_absolute_change: float | None,
    min_relative_change: float | None,
    better_up: bool,
) -> tuple[list[str], list[str]]:
    failures: list[str] = []
    passes: list[str] = []
    op = ">=" if better_up else "<="
    sign = 1 if better_up else -1
    cand = Decimal(candidate)

    def ok(left: Decimal, right: Decimal) -> bool:
        return left >= right if better_up else left <= right

    if min_absolute_change is not None:
        # As MLflow: the bound is added in floats, then both sides compared as Decimals.
        bound = champion + sign * min_absolute_change
        text = (
            f"candidate {name} {candidate:.4g} against champion {champion:.4g} "
            f"{'+' if better_up else '-'} {min_absolute_change:g} = {bound:.4g} ({op})"
        )
        (passes if ok(cand, Decimal(bound)) else failures).append(
            f"{text}: {'met' if ok(cand, Decimal(bound)) else 'missed'}"
        )
    if min_relative_change is not None:
        if champion == 0:
            bound = champion + sign * 1e-10
            met = ok(cand, Decimal(bound))
            text = (
                f"champion {name} is 0, so the relative change falls back to "
                f"'candidate strictly better': {candidate:.4g} {op} {bound:.1g}"
            )
        else:
            change = (
                (candidate - champion) / champion
                if better_up
                else (champion - candidate) / champion
            )
            met = not change < min_relative_change
            text = (
                f"relative change in {name} {change:+.2%} (candidate {candidate:.4g}, "
                f"champion {champion:.4g}) against the minimum {min_relative_change:.2%}"
            )
        (passes if met else failures).append(f"{text}: {'met' if met else 'missed'}")
    return failures, passes


def _finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{field} must be a finite number, got {value!r}", field=field)
    return float(value)
