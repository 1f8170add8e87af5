"""The experiment statistics against scipy and the published formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp

from conveyor.errors import InvalidInputError
from conveyor.experiments.stats import (
    Summary,
    always_valid,
    msprt,
    sample_size_means,
    sample_size_proportions,
    srm_check,
    two_proportion_ztest,
    welch_ttest,
)


def test_sample_size_for_proportions_matches_the_textbook() -> None:
    # Fleiss eq. 4.14 without continuity correction: 10 % -> 12 %, 5 %, 80 %: 3,841
    assert sample_size_proportions(0.10, 0.02) == 3841
    assert sample_size_proportions(0.10, 0.2, relative=True) == 3841
    assert sample_size_proportions(0.10, 0.02, power=0.9) > 3841
    assert sample_size_proportions(0.10, -0.02) == sample_size_proportions(0.08, 0.02)


def _exact_power(n: int, p1: float, p2: float, alpha: float) -> float:
    """P(the pooled z-test finds the treatment significantly better) with both arms'
    counts binomial: summed over every pair of counts within 10 sd of their means."""
    from scipy.stats import binom

    def counts(p: float) -> tuple[np.ndarray, np.ndarray]:
        sd = (n * p * (1 - p)) ** 0.5
        x = np.arange(max(0, int(n * p - 10 * sd)), min(n, int(n * p + 10 * sd)) + 1)
        return x, binom.pmf(x, n, p)

    (xa, pa), (xb, pb) = counts(p1), counts(p2)
    test = two_proportion_ztest(xa[:, None], n, xb[None, :], n, alpha=alpha)
    better = (np.asarray(test.p_value) < alpha) & (np.asarray(test.diff) > 0)
    return float((pa[:, None] * pb[None, :] * better).sum())


def test_the_planned_size_gives_the_designed_power_on_binomial_counts() -> None:
    # The formula is a normal approximation; the z-test sees binomial counts. Its exact
    # power at the planned size (no sampling, so no Monte Carlo error): 80.06 % at
    # alpha 0.05 (3,841 per arm), 80.05 % at 0.04 (4,103, the fixed test's share), and
    # the size is tight: 5 % fewer units fall below the design.
    for alpha in (0.05, 0.04):
        n = sample_size_proportions(0.10, 0.02, alpha=alpha, power=0.8)
        assert 0.80 <= _exact_power(n, 0.10, 0.12, alpha) < 0.81
        assert _exact_power(int(n * 0.95), 0.10, 0.12, alpha) < 0.79


def test_sample_size_for_means() -> None:
    # 2 (1.96 + 0.8416)^2 * 10^2 / 2^2 = 392.4 -> 393
    assert sample_size_means(10.0, 2.0) == 393
    assert sample_size_means(10.0, 0.1, baseline=20.0, relative=True) == 393


@pytest.mark.parametrize(
    "call",
    [
        lambda: sample_size_proportions(1.2, 0.02),
        lambda: sample_size_proportions(0.1, 0.0),
        lambda: sample_size_proportions(0.95, 0.1),
        lambda: sample_size_proportions(0.1, 0.02, alpha=0.0),
        lambda: sample_size_means(0.0, 1.0),
        lambda: sample_size_means(1.0, 0.1, relative=True),
    ],
)
def test_bad_design_inputs_are_refused(call: object) -> None:
    with pytest.raises(InvalidInputError):
        call()  # type: ignore[operator]


def test_two_proportion_ztest_is_pearsons_chi_square() -> None:
    result = two_proportion_ztest(410, 4000, 480, 4000)
    chi2, p, _, _ = sp.chi2_contingency([[410, 3590], [480, 3520]], correction=False)
    assert result.statistic**2 == pytest.approx(chi2)
    assert result.p_value == pytest.approx(p)
    assert result.diff == pytest.approx(70 / 4000)
    assert result.ci_low < result.diff < result.ci_high
    assert result.ci_low > 0  # p < 0.05 and the interval excludes 0


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(10, 2, 300), rng.normal(10.4, 3, 250)
    ours = welch_ttest(Summary.of_values(a), Summary.of_values(b))
    theirs = sp.ttest_ind(b, a, equal_var=False)
    assert ours.statistic == pytest.approx(theirs.statistic)
    assert ours.p_value == pytest.approx(theirs.pvalue)
    ci = theirs.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((ci.low, ci.high))


def test_msprt_matches_the_papers_formula_for_equal_arms() -> None:
    # Johari et al.: Lambda = sqrt(V/(V+n tau^2)) exp(n^2 tau^2 d^2 / (2V(V+n tau^2))), V=2s^2
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 500), rng.normal(0.2, 1, 500)
    control, treatment = Summary.of_values(a), Summary.of_values(b)
    result = msprt(control, treatment, tau=0.1)
    v = float(control.variance + treatment.variance)  # 2 sigma^2, plug-in
    n, tau2, d = 500, 0.01, b.mean() - a.mean()
    expected = np.sqrt(v / (v + n * tau2)) * np.exp(n**2 * tau2 * d**2 / (2 * v * (v + n * tau2)))
    assert result.ratio == pytest.approx(expected)
    assert result.p_value == pytest.approx(min(1.0, 1 / expected))
    assert result.ci_low < d < result.ci_high
    # the confidence sequence is wider than the fixed interval at the same look
    fixed = welch_ttest(control, treatment)
    assert result.ci_high - result.ci_low > fixed.ci_high - fixed.ci_low


def test_always_valid_takes_running_minimum_and_intersection() -> None:
    looks = msprt(
        Summary.of_proportion(np.array([10, 40, 90]), np.array([100, 400, 900])),
        Summary.of_proportion(np.array([20, 45, 100]), np.array([100, 400, 900])),
        tau=0.02,
        proportion=True,
    )
    folded = always_valid(looks)
    assert np.all(np.diff(folded.p_value) <= 0)
    assert folded.p_value[-1] == pytest.approx(looks.p_value.min())
    assert np.all(np.diff(folded.ci_low) >= 0) and np.all(np.diff(folded.ci_high) <= 0)


def test_msprt_refuses_a_zero_mixture() -> None:
    with pytest.raises(InvalidInputError):
        msprt(Summary(10, 5, 5), Summary(10, 5, 5), tau=0)


def test_srm_check() -> None:
    assert not srm_check([5030, 4970], [50, 50]).mismatch
    bad = srm_check([5300, 4700], [50, 50])
    assert bad.mismatch and bad.p_value < 1e-6
    assert bad.statistic == pytest.approx(sp.chisquare([5300, 4700]).statistic)
    assert not srm_check([9000, 1000], [90, 10]).mismatch
    assert not srm_check([0, 0], [1, 1]).mismatch
    with pytest.raises(InvalidInputError):
        srm_check([1, 2, 3], [1, 1])
