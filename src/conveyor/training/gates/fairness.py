"""Fairness across groups: per-group metrics, demographic parity and equalized odds.

Definitions follow fairlearn's:

- demographic parity difference: the largest minus the smallest selection
  rate (share of rows predicted 1) across groups;
- equalized odds difference: the larger of the true-positive-rate gap and
  the false-positive-rate gap across groups.

A group with fewer than ``min_group_size`` hold-out rows is too small to
judge: it is left out of every comparison and named in a warning-severity
check, so a report says what could not be judged instead of passing it
silently. Counts are computed with ``numpy.bincount`` over group codes, one
pass over the rows for all groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.checks.metrics import metric
from conveyor.checks.result import CheckResult
from conveyor.errors import InvalidInputError
from conveyor.training.gates.context import GateContext

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["fairness"]


def fairness(
    metric_name: str = "accuracy",
    *,
    groups: Any = None,
    min_group_size: int = 30,
    max_demographic_parity_difference: float | None = 0.1,
    max_equalized_odds_difference: float | None = 0.1,
    max_metric_gap: float | None = None,
) -> Callable[[GateContext], list[CheckResult]]:
    """A gate judging a binary classifier's fairness across groups.

    ``groups`` is a column name of ``holdout_X``, one label per hold-out row,
    or None for ``context.groups``. ``max_metric_gap`` bounds the spread of
    the per-group metric (best group minus worst); without it the per-group
    metric is reported, not judged.
    """
    m = metric(metric_name)
    if (
        isinstance(min_group_size, bool)
        or not isinstance(min_group_size, int)
        or min_group_size < 1
    ):
        raise InvalidInputError(
            f"min_group_size must be an integer >= 1, got {min_group_size!r}",
            field="min_group_size",
        )
    for field, value in (
        ("max_demographic_parity_difference", max_demographic_parity_difference),
        ("max_equalized_odds_difference", max_equalized_odds_difference),
        ("max_metric_gap", max_metric_gap),
    ):
        if value is not None and (not isinstance(value, int | float) or not value >= 0):
            raise InvalidInputError(f"{field} must be a number >= 0, got {value!r}", field=field)

    def fairness_gate(ctx: GateContext) -> list[CheckResult]:
        import numpy as np

        labels, codes = _group_codes(ctx, groups)
        y = ctx.y()
        pred = ctx.predictions("model", "label")
        sizes = np.bincount(codes, minlength=len(labels))
        judged = sizes >= min_group_size
        small = {str(labels[i]): int(sizes[i]) for i in np.flatnonzero(~judged)}
        results = [_size_check(small, min_group_size, int(judged.sum()))]
        if judged.sum() < 2:
            results.append(
                CheckResult(
                    "fairness.groups",
                    False,
                    observed=int(judged.sum()),
                    threshold=2,
                    detail=f"{int(judged.sum())} group(s) have at least {min_group_size} rows: "
                    "at least 2 are needed to compare",
                    severity="warning",
                )
            )
            return results
        names = [str(label) for label in labels]
        selected = np.bincount(codes, weights=(pred == 1), minlength=len(labels))
        positives = np.bincount(codes, weights=(y == 1), minlength=len(labels))
        true_pos = np.bincount(codes, weights=(y == 1) & (pred == 1), minlength=len(labels))
        false_pos = np.bincount(codes, weights=(y != 1) & (pred == 1), minlength=len(labels))
        negatives = sizes - positives
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = selected / sizes
            tpr = np.where(positives > 0, true_pos / positives, np.nan)
            fpr = np.where(negatives > 0, false_pos / negatives, np.nan)

        results.append(
            _gap_check(
                "fairness.demographic_parity_difference",
                "selection rate",
                _by_group(names, rate, judged),
                max_demographic_parity_difference,
            )
        )
        tpr_gap = _spread(_by_group(names, tpr, judged))
        fpr_gap = _spread(_by_group(names, fpr, judged))
        eo = max(tpr_gap[0], fpr_gap[0])
        which = "true positive rate" if tpr_gap[0] >= fpr_gap[0] else "false positive rate"
        worst = tpr_gap if tpr_gap[0] >= fpr_gap[0] else fpr_gap
        eo_ok = max_equalized_odds_difference is None or eo <= max_equalized_odds_difference
        results.append(
            CheckResult(
                "fairness.equalized_odds_difference",
                bool(eo_ok),
                observed={"difference": eo, "tpr_gap": tpr_gap[0], "fpr_gap": fpr_gap[0]},
                threshold=max_equalized_odds_difference,
                detail=_gap_words(eo, which, worst, max_equalized_odds_difference),
            )
        )
        per_group = {
            names[i]: float(m(y[codes == i], ctx.predictions("model", m.needs)[codes == i]))
            for i in np.flatnonzero(judged)
        }
        results.append(_gap_check(f"fairness.{m.name}_by_group", m.name, per_group, max_metric_gap))
        return results

    return fairness_gate


def _group_codes(ctx: GateContext, groups: Any) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]]:
    import numpy as np

    source = ctx.groups if groups is None else groups
    if source is None:
        raise InvalidInputError(
            "the fairness gate needs groups: fairness(groups='column') or GateContext(groups=...)",
            field="groups",
        )
    if isinstance(source, str):
        try:
            source = ctx.holdout_X[source]
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise InvalidInputError(
                f"the hold-out set has no column {source!r} to group by", field="groups"
            ) from exc
    values = np.asarray(source)
    if values.ndim != 1 or len(values) != len(ctx.y()):
        raise InvalidInputError(
            f"groups holds {values.shape} labels for {len(ctx.y())} hold-out rows; "
            "one label per row is needed",
            field="groups",
        )
    labels, codes = np.unique(values.astype(str), return_inverse=True)
    return labels, codes.reshape(-1)


def _by_group(names: list[str], values: Any, judged: Any) -> dict[str, float]:
    return {names[i]: float(values[i]) for i in range(len(names)) if judged[i]}


def _spread(values: dict[str, float]) -> tuple[float, str, str]:
    """(max - min, the group with the max, the group with the min), ignoring undefined values."""
    defined = {k: v for k, v in values.items() if not math.isnan(v)}
    if len(defined) < 2:
        return 0.0, "", ""
    hi = max(defined, key=lambda k: defined[k])
    lo = min(defined, key=lambda k: defined[k])
    return defined[hi] - defined[lo], hi, lo


def _gap_words(gap: float, what: str, spread: tuple[float, str, str], bound: float | None) -> str:
    _, hi, lo = spread
    where = f" (highest in {hi!r}, lowest in {lo!r})" if hi else ""
    if bound is None:
        return f"the {what} differs by {gap:.4g} across groups{where}; reported, not judged"
    verdict = "within" if gap <= bound else "over"
    return f"the {what} differs by {gap:.4g} across groups{where}: {verdict} the limit {bound:.4g}"


def _gap_check(name: str, what: str, values: dict[str, float], bound: float | None) -> CheckResult:
    spread = _spread(values)
    ok = bound is None or spread[0] <= bound
    return CheckResult(
        name,
        bool(ok),
        observed={"difference": spread[0], "by_group": values},
        threshold=bound,
        detail=_gap_words(spread[0], what, spread, bound),
    )


def _size_check(small: dict[str, int], min_size: int, judged: int) -> CheckResult:
    if not small:
        detail = f"all {judged} groups have at least {min_size} hold-out rows"
    else:
        listed = ", ".join(f"{k!r} ({v} rows)" for k, v in sorted(small.items()))
        detail = (
            f"too small to judge, left out of the comparisons: {listed}; "
            f"at least {min_size} rows are needed"
        )
    return CheckResult(
        "fairness.group_size",
        not small,
        observed=small,
        threshold=min_size,
        detail=detail,
        severity="warning",
    )
