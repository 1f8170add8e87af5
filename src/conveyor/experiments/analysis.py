"""An experiment's judgment as a pure function: metrics at checkpoints in, a verdict out.

::

    primary = MetricLooks.proportion("conversion", control_x, control_n, treat_x, treat_n,
                                     tau=0.02)
    judged = judge(primary, guardrails=[], counts=[n_a, n_b], weights=[50, 50],
                   planned_n=3841, alpha=0.05)
    judged.recommendation      # "ship" | "do not ship" | "keep running"

Each metric arrives as cumulative :class:`~conveyor.experiments.stats.Summary` arrays,
one entry per checkpoint (a batch of events, in time order), so the sequential test is
folded over every look the data allowed, as if someone had peeked at each.

The rule (:func:`verdicts`, vectorised so the simulations run the very same code):

1. a sample ratio mismatch: **do not ship** (the comparison cannot be trusted);
2. a guardrail significantly worse (always-valid test, any time): **do not ship**;
3. the primary metric's always-valid p-value below its share of alpha (a fifth):
   stop early, **ship** when
   the treatment is better, **do not ship** when worse;
4. before the planned sample size (the smaller arm below it): **keep running**; the
   fixed-horizon test is not used on an underpowered sample;
5. at the planned size: the fixed-horizon test (at the rest of alpha) decides:
   **ship** when significantly better, **do not ship** when significantly worse or
   when no difference was detected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from conveyor.checks.result import CheckResult
from conveyor.experiments.stats import (
    FixedTest,
    SequentialTest,
    SrmResult,
    Summary,
    always_valid,
    msprt,
    srm_check,
    two_proportion_ztest,
    welch_ttest,
)

__all__ = [
    "DONT_SHIP",
    "KEEP_RUNNING",
    "NO_DIFFERENCE",
    "SHIP",
    "Judgment",
    "MetricLooks",
    "MetricResult",
    "judge",
    "split_alpha",
    "verdicts",
]

SHIP, KEEP_RUNNING, DONT_SHIP, NO_DIFFERENCE = 1, 0, -1, -2
#: The share of alpha the always-valid early stop spends; the fixed-horizon test at the
#: planned size spends the rest, so the rule's false positive rate stays below alpha.
SEQUENTIAL_SHARE = 0.2
Recommendation = Literal["ship", "do not ship", "keep running"]
_WORDS: dict[int, Recommendation] = {
    SHIP: "ship",
    KEEP_RUNNING: "keep running",
    DONT_SHIP: "do not ship",
    NO_DIFFERENCE: "do not ship",
}


@dataclass(frozen=True, slots=True)
class MetricLooks:
    """One metric, both arms, cumulative at each checkpoint (the last axis)."""

    name: str
    kind: Literal["proportion", "mean"]
    control: Summary
    treatment: Summary
    tau: float
    higher_is_better: bool = True

    @classmethod
    def proportion(
        cls,
        name: str,
        control_x: Any,
        control_n: Any,
        treatment_x: Any,
        treatment_n: Any,
        *,
        tau: float,
        higher_is_better: bool = True,
    ) -> MetricLooks:
        return cls(
            name,
            "proportion",
            Summary.of_proportion(np.asarray(control_x), np.asarray(control_n)),
            Summary.of_proportion(np.asarray(treatment_x), np.asarray(treatment_n)),
            tau,
            higher_is_better,
        )

    def sequential(self, alpha: float) -> SequentialTest:
        """The always-valid test folded over every checkpoint."""
        looks = msprt(
            self.control,
            self.treatment,
            tau=self.tau,
            alpha=alpha,
            proportion=self.kind == "proportion",
        )
        return always_valid(looks)

    def fixed(self, alpha: float) -> FixedTest:
        """The fixed-horizon test on each checkpoint's data."""
        if self.kind == "proportion":
            return two_proportion_ztest(
                self.control.total,
                self.control.n,
                self.treatment.total,
                self.treatment.n,
                alpha=alpha,
            )
        return welch_ttest(self.control, self.treatment, alpha=alpha)


def split_alpha(alpha: float, sequential_share: float = SEQUENTIAL_SHARE) -> tuple[float, float]:
    """``(sequential, fixed)``: the shares of ``alpha`` the early stop and the
    fixed-horizon test spend. Their union's false positive rate is at most ``alpha``
    (Bonferroni); the sample size is planned for the fixed share."""
    return alpha * sequential_share, alpha * (1 - sequential_share)


def verdicts(
    looks: MetricLooks, *, planned_n: int, alpha: float, sequential_share: float = SEQUENTIAL_SHARE
) -> tuple[np.ndarray, SequentialTest, FixedTest]:
    """The primary metric's verdict codes at every checkpoint (rules 3 to 5), vectorised:
    ``SHIP``, ``DONT_SHIP``, ``NO_DIFFERENCE`` or ``KEEP_RUNNING``."""
    alpha_seq, alpha_fixed = split_alpha(alpha, sequential_share)
    seq = looks.sequential(alpha_seq)
    fixed = looks.fixed(alpha_fixed)
    sign = 1.0 if looks.higher_is_better else -1.0
    seq_better = sign * np.asarray(seq.diff) > 0
    fixed_better = sign * np.asarray(fixed.diff) > 0
    reached = np.minimum(np.asarray(looks.control.n), np.asarray(looks.treatment.n)) >= planned_n
    seq_sig = np.asarray(seq.p_value) < alpha_seq
    fixed_sig = np.asarray(fixed.p_value) < alpha_fixed
    # Once the always-valid test crossed, the experiment stopped there: the verdict is
    # the one of the first crossing, whatever later looks say.
    crossed = np.maximum.accumulate(seq_sig, axis=-1)
    first = np.argmax(seq_sig, axis=-1)[..., None]
    early_better = np.take_along_axis(np.broadcast_to(seq_better, seq_sig.shape), first, -1)
    early = np.where(np.broadcast_to(early_better, seq_sig.shape), SHIP, DONT_SHIP)
    at_horizon = np.where(fixed_sig, np.where(fixed_better, SHIP, DONT_SHIP), NO_DIFFERENCE)
    code = np.where(crossed, early, np.where(reached, at_horizon, KEEP_RUNNING))
    return code.astype(np.int8), seq, fixed


@dataclass(slots=True)
class MetricResult:
    """One metric's results at the last checkpoint."""

    name: str
    kind: str
    role: Literal["primary", "guardrail"]
    control: dict[str, Any]
    treatment: dict[str, Any]
    fixed: dict[str, Any]
    sequential: dict[str, Any]
    significant: bool
    worse: bool
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "higher_is_better": self.higher_is_better,
            "control": self.control,
            "treatment": self.treatment,
            "fixed_horizon": self.fixed,
            "sequential": self.sequential,
            "significant": self.significant,
            "worse": self.worse,
        }


@dataclass(slots=True)
class Judgment:
    """The recommendation, why, and what it rests on (for the report)."""

    recommendation: Recommendation
    reason: str
    primary: MetricResult
    guardrails: list[MetricResult]
    srm: SrmResult
    planned_n: int
    smallest_arm: int
    checks: list[CheckResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recommendation": self.recommendation,
            "reason": self.reason,
            "planned_n_per_arm": self.planned_n,
            "smallest_arm_n": self.smallest_arm,
            "progress": min(1.0, self.smallest_arm / self.planned_n) if self.planned_n else None,
            "primary": self.primary.to_dict(),
            "guardrails": [g.to_dict() for g in self.guardrails],
            "srm": self.srm.to_dict(),
        }


def _arm(summary: Summary, alpha: float, proportion: bool) -> dict[str, Any]:
    from scipy.stats import norm

    n = int(np.asarray(summary.n).reshape(-1)[-1])
    total = float(np.asarray(summary.total).reshape(-1)[-1])
    squares = float(np.asarray(summary.squares).reshape(-1)[-1])
    last = Summary(n, total, squares)
    mean = float(last.mean) if n else None
    out: dict[str, Any] = {"n": n, "mean": mean}
    if proportion:
        out["successes"] = round(total)
    if n > 1 and mean is not None:
        var = mean * (1 - mean) if proportion else float(last.variance)
        half = float(norm.ppf(1 - alpha / 2)) * (var / n) ** 0.5
        out["ci"] = [mean - half, mean + half]
    else:
        out["ci"] = [None, None]
    return out


def _last(value: Any) -> Any:
    return np.asarray(value).reshape(-1)[-1]


def _last_seq(seq: SequentialTest) -> dict[str, Any]:
    return SequentialTest(
        _last(seq.diff),
        _last(seq.ratio),
        _last(seq.p_value),
        _last(seq.ci_low),
        _last(seq.ci_high),
    ).to_dict()


def _last_fixed(fixed: FixedTest) -> dict[str, Any]:
    return FixedTest(
        _last(fixed.diff),
        _last(fixed.ci_low),
        _last(fixed.ci_high),
        _last(fixed.statistic),
        _last(fixed.p_value),
        None if fixed.df is None else _last(fixed.df),
    ).to_dict()


def judge(
    primary: MetricLooks,
    *,
    guardrails: Sequence[MetricLooks] = (),
    counts: Sequence[int],
    weights: Sequence[float],
    planned_n: int,
    alpha: float = 0.05,
    sequential_share: float = SEQUENTIAL_SHARE,
) -> Judgment:
    """The whole rule (see the module) on one experiment's checkpoints."""
    codes, seq, fixed = verdicts(
        primary, planned_n=planned_n, alpha=alpha, sequential_share=sequential_share
    )
    alpha_seq, alpha_fixed = split_alpha(alpha, sequential_share)
    code = int(codes.reshape(-1)[-1])
    smallest = int(min(counts))
    srm = srm_check(counts, weights)
    sign = 1.0 if primary.higher_is_better else -1.0
    p_result = MetricResult(
        primary.name,
        primary.kind,
        "primary",
        _arm(primary.control, alpha, primary.kind == "proportion"),
        _arm(primary.treatment, alpha, primary.kind == "proportion"),
        _last_fixed(fixed),
        _last_seq(seq),
        bool(_last(seq.p_value) < alpha_seq)
        or (smallest >= planned_n and bool(_last(fixed.p_value) < alpha_fixed)),
        bool(sign * _last(seq.diff) < 0),
        primary.higher_is_better,
    )
    g_results: list[MetricResult] = []
    for g in guardrails:
        g_seq = g.sequential(alpha)
        g_sign = 1.0 if g.higher_is_better else -1.0
        significant = bool(_last(g_seq.p_value) < alpha)
        worse = significant and bool(g_sign * _last(g_seq.diff) < 0)
        g_results.append(
            MetricResult(
                g.name,
                g.kind,
                "guardrail",
                _arm(g.control, alpha, g.kind == "proportion"),
                _arm(g.treatment, alpha, g.kind == "proportion"),
                _last_fixed(g.fixed(alpha)),
                _last_seq(g_seq),
                significant,
                worse,
                g.higher_is_better,
            )
        )
    broken = [g.name for g in g_results if g.worse]
    if srm.mismatch:
        rec: Recommendation = "do not ship"
        reason = (
            f"sample ratio mismatch (p = {srm.p_value:.2g}): the arms' counts {srm.counts} do "
            "not match the designed split; the assignment or logging is broken"
        )
    elif broken:
        rec, reason = "do not ship", f"guardrail significantly worse: {', '.join(broken)}"
    else:
        rec = _WORDS[code]
        if code == KEEP_RUNNING:
            reason = (
                f"no always-valid difference yet, and {smallest} of {planned_n} units per arm: "
                "the fixed-horizon test waits for the planned sample size"
            )
        elif code == NO_DIFFERENCE:
            reason = f"no difference detected at the planned sample size ({planned_n} per arm)"
        elif smallest < planned_n:
            reason = (
                f"the always-valid test stopped early ({'better' if code == SHIP else 'worse'}, "
                f"p = {float(_last(seq.p_value)):.3g})"
            )
        else:
            reason = (
                f"{'better' if code == SHIP else 'worse'} at the planned sample size "
                f"(p = {float(_last(fixed.p_value)):.3g})"
            )
    checks = [
        CheckResult(
            "sample_ratio",
            not srm.mismatch,
            observed=round(srm.p_value, 6),
            threshold=0.001,
            detail=f"counts {srm.counts} against shares "
            f"{[round(s, 4) for s in srm.expected_share]}",
        ),
        *(
            CheckResult(
                f"guardrail:{g.name}",
                not g.worse,
                observed=g.sequential["diff"],
                threshold="not significantly worse (always-valid)",
                detail=f"always-valid p = {g.sequential['p_value']}, CI {g.sequential['ci']}",
            )
            for g in g_results
        ),
        CheckResult(
            f"primary:{primary.name}",
            not p_result.worse or not p_result.significant,
            observed=p_result.sequential["diff"],
            threshold={"sequential_alpha": alpha_seq, "fixed_alpha": alpha_fixed},
            detail=f"{rec}: {reason}",
            severity="warning",
        ),
        CheckResult(
            "sample_size",
            smallest >= planned_n,
            observed=smallest,
            threshold=planned_n,
            detail="units in the smaller arm against the planned size per arm",
            severity="warning",
        ),
    ]
    return Judgment(rec, reason, p_result, g_results, srm, planned_n, smallest, checks)
