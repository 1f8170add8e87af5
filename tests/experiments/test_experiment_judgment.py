"""Judgment quality of the experiment statistics: seeded simulations, in-process and
vectorised (200 runs each, a fraction of a second).

- A-A with a look at every batch of events: the always-valid mSPRT keeps its false
  positive rate under alpha + 2 points, a naive z-test repeated at each look does not.
- A-B with a real 2-point lift in conversion (10 % -> 12 %), run to the computed sample
  size: the recommendation says "ship" in at least the designed 80 % of runs.
"""

from __future__ import annotations

import numpy as np

from conveyor.experiments.analysis import SHIP, MetricLooks, split_alpha, verdicts
from conveyor.experiments.stats import sample_size_proportions, two_proportion_ztest

ALPHA = 0.05
RUNS = 200
BATCH = 100  # units per arm between two looks
BASELINE, LIFT = 0.10, 0.02
SEED = 14  # the number, fixed before the first run


def _cumulative(
    rng: np.random.Generator, rate_a: float, rate_b: float, looks: np.ndarray, runs: int
) -> MetricLooks:
    step = np.diff(np.r_[0, looks])
    a = rng.binomial(step, rate_a, (runs, looks.size)).cumsum(axis=1)
    b = rng.binomial(step, rate_b, (runs, looks.size)).cumsum(axis=1)
    n = np.broadcast_to(looks, (runs, looks.size))
    return MetricLooks.proportion("conversion", a, n, b, n, tau=LIFT)


def test_aa_peeking_msprt_keeps_alpha_naive_ztest_does_not() -> None:
    rng = np.random.default_rng(SEED)
    looks = np.arange(1, 61) * BATCH  # 60 looks, 6,000 units per arm
    metric = _cumulative(rng, BASELINE, BASELINE, looks, RUNS)
    always_valid = metric.sequential(ALPHA)
    msprt_fpr = float((always_valid.p_value[:, -1] < ALPHA).mean())
    naive = two_proportion_ztest(
        metric.control.total, metric.control.n, metric.treatment.total, metric.treatment.n
    )
    naive_fpr = float((naive.p_value < ALPHA).any(axis=1).mean())
    print(f"A-A, {RUNS} runs x {looks.size} looks: mSPRT {msprt_fpr:.3f}, naive z {naive_fpr:.3f}")
    assert msprt_fpr <= ALPHA + 0.02
    assert naive_fpr > ALPHA + 0.02
    # The confidence sequence covers the true difference (0) in the same share of runs.
    covered = (always_valid.ci_low[:, -1] <= 0) & (always_valid.ci_high[:, -1] >= 0)
    assert covered.mean() >= 1 - ALPHA - 0.02


def _planned() -> int:
    return sample_size_proportions(BASELINE, LIFT, alpha=split_alpha(ALPHA)[1], power=0.8)


def test_aa_the_whole_recommendation_rule_keeps_alpha() -> None:
    rng = np.random.default_rng(SEED + 1)
    n = _planned()
    looks = np.minimum(np.arange(1, n // BATCH + 2) * BATCH, n)
    codes, _, _ = verdicts(
        _cumulative(rng, BASELINE, BASELINE, looks, RUNS), planned_n=n, alpha=ALPHA
    )
    decided = float(np.isin(codes[:, -1], [SHIP, -1]).mean())
    shipped = float((codes[:, -1] == SHIP).mean())
    print(f"A-A, whole rule to n={n}: significant either way {decided:.3f}, ship {shipped:.3f}")
    assert decided <= ALPHA + 0.02
    # before the planned size, without an always-valid crossing, it never decides
    assert set(np.unique(codes[:, :-1])) <= {0, 1, -1}


def test_ab_two_point_lift_is_detected_at_the_computed_sample_size() -> None:
    rng = np.random.default_rng(SEED)
    n = _planned()
    looks = np.minimum(np.arange(1, n // BATCH + 2) * BATCH, n)
    assert looks[-1] == n
    codes, seq, _ = verdicts(
        _cumulative(rng, BASELINE, BASELINE + LIFT, looks, RUNS), planned_n=n, alpha=ALPHA
    )
    power = float((codes[:, -1] == SHIP).mean())
    early = float((np.asarray(seq.p_value)[:, -1] < split_alpha(ALPHA)[0]).mean())
    print(
        f"A-B +2 points, n={n} per arm, {RUNS} runs: ship {power:.3f} (stopped early {early:.3f})"
    )
    assert power >= 0.80
    # never "do not ship" for a real improvement
    assert not (codes[:, -1] == -1).any()


def test_power_over_many_runs_matches_the_design() -> None:
    # 4,000 runs: the Monte Carlo error is 0.6 points, so the design itself is checked
    # (200 runs have a 2.8-point standard error around the designed 80 %).
    rng = np.random.default_rng(SEED + 2)
    n = _planned()
    looks = np.array([n // 4, n // 2, 3 * n // 4, n])
    codes, _, _ = verdicts(
        _cumulative(rng, BASELINE, BASELINE + LIFT, looks, 4000), planned_n=n, alpha=ALPHA
    )
    power = float((codes[:, -1] == SHIP).mean())
    print(f"A-B +2 points, 4,000 runs: ship {power:.4f}")
    assert 0.785 <= power <= 0.86
