"""Each drift statistic equals scipy's own on the same inputs, to 1e-9."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.spatial import distance
from scipy.stats.contingency import association

from conveyor.data.drift import stats

TOL = 1e-9


def _sorted(x: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray(x, dtype=np.float64))


def _close(a: float | None, b: float) -> None:
    assert a is not None
    assert a == pytest.approx(float(b), rel=TOL, abs=TOL)


# -- Kolmogorov-Smirnov --------------------------------------------------------


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "shift"),
    [
        (50, 70, 0.0),  # exact p-value
        (1_000, 1_000, 0.2),
        (9_000, 10_000, 0.05),
        (20_000, 15_000, 0.0),  # asymptotic: Pelz-Good / Durbin branches
        (20_000, 15_000, 0.05),  # asymptotic: 2 * smirnov, the vectorised branch
        (60_000, 50_000, 0.03),
        (30_000, 25_000, 0.6),  # p below every float: 0
        (12_000, 40, 0.5),  # one small sample: en below 140
    ],
)
def test_ks_matches_scipy(n_ref: int, n_cur: int, shift: float) -> None:
    rng = np.random.default_rng(n_ref + n_cur)
    a, b = rng.normal(size=n_ref), rng.normal(loc=shift, size=n_cur)
    ours = stats.ks_2samp(_sorted(a), _sorted(b))
    theirs = sps.ks_2samp(a, b)
    _close(ours.statistic, theirs.statistic)
    _close(ours.p_value, theirs.pvalue)
    assert ours.effect_size == ours.statistic


def test_ks_matches_scipy_with_ties_across_and_within_samples() -> None:
    rng = np.random.default_rng(7)
    for n_ref, n_cur in ((300, 200), (25_000, 18_000)):
        a = rng.integers(0, 40, n_ref).astype(float)
        b = rng.integers(2, 41, n_cur).astype(float)
        ours = stats.ks_2samp(_sorted(a), _sorted(b))
        theirs = sps.ks_2samp(a, b)
        _close(ours.statistic, theirs.statistic)
        _close(ours.p_value, theirs.pvalue)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=40),
    st.lists(st.integers(-5, 5), min_size=1, max_size=40),
)
def test_ks_and_wasserstein_match_scipy_on_any_small_samples(a: list[int], b: list[int]) -> None:
    ra, rb = _sorted(np.array(a)), _sorted(np.array(b))
    ours = stats.ks_2samp(ra, rb)
    with warnings.catch_warnings():
        # scipy warns when its exact p-value falls back to the asymptotic one.
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = sps.ks_2samp(a, b)
    _close(ours.statistic, theirs.statistic)
    _close(ours.p_value, theirs.pvalue)
    _close(stats.wasserstein(ra, rb), sps.wasserstein_distance(a, b))


@pytest.mark.parametrize("n", [141, 2_000, 50_000])
def test_kstwo_tail_matches_scipy_across_its_branches(n: int) -> None:
    # Every branch of scipy's kolmogn survival function, including the one
    # Conveyor computes itself (2.2 <= n d^2 < 370).
    for d in np.geomspace(0.2 / n, 0.9, 40):
        assert stats._kstwo_sf(float(d), n) == pytest.approx(
            float(sps.kstwo.sf(d, n)), rel=TOL, abs=TOL
        )


@pytest.mark.slow
def test_kstwo_tail_matches_scipy_at_a_million_rows() -> None:
    n = 500_000  # en of two samples of a million rows
    for d in np.geomspace(np.sqrt(2.2 / n), np.sqrt(370 / n), 6):
        assert stats._kstwo_sf(float(d), n) == pytest.approx(
            float(sps.kstwo.sf(d, n)), rel=TOL, abs=TOL
        )


def test_ecdf_gap_needs_two_nonempty_samples() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        stats.ecdf_gap(np.array([]), np.array([1.0]))


# -- Wasserstein -----------------------------------------------------------------


@pytest.mark.parametrize(("n_ref", "n_cur"), [(10, 13), (5_000, 7_000), (120_000, 80_000)])
def test_wasserstein_matches_scipy(n_ref: int, n_cur: int) -> None:
    rng = np.random.default_rng(n_cur)
    a, b = rng.exponential(size=n_ref), rng.exponential(scale=1.1, size=n_cur) + 0.05
    _close(stats.wasserstein(_sorted(a), _sorted(b)), sps.wasserstein_distance(a, b))


# -- counts: chi-squared, z, Cramér's V, PSI, Jensen-Shannon ---------------------------


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        ([120, 80, 50, 0], [100, 95, 40, 12]),  # a category the reference never had
        ([5_000, 3_000], [4_500, 3_600]),  # 2 x 2
        ([10, 0, 30], [12, 0, 25]),  # a category neither sample has
        ([1_000_000, 2_000_000, 5], [10_000, 21_000, 3]),
    ],
)
def test_chi2_matches_scipy_chi2_contingency(ref: list[int], cur: list[int]) -> None:
    ours = stats.chi2_two_sample(np.array(ref), np.array(cur))
    table = np.array([ref, cur])
    theirs = sps.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
    _close(ours.statistic, theirs.statistic)
    _close(ours.p_value, theirs.pvalue)


def test_chi2_of_a_single_category_is_no_evidence() -> None:
    ours = stats.chi2_two_sample(np.array([10, 0]), np.array([4, 0]))
    assert (ours.statistic, ours.p_value, ours.effect_size) == (0.0, 1.0, 0.0)


def test_cramers_v_balanced_equals_scipy_for_equal_samples_and_ignores_size_imbalance() -> None:
    ref, cur = np.array([300, 500, 200]), np.array([350, 420, 230])
    _close(
        stats.cramers_v_balanced(ref, cur),
        association(np.array([ref, cur]), method="cramer", correction=False),
    )
    # The same two distributions, one sample 100 times larger: same effect.
    _close(stats.cramers_v_balanced(ref * 100, cur), stats.cramers_v_balanced(ref, cur))


@pytest.mark.parametrize(
    ("hits_ref", "n_ref", "hits_cur", "n_cur"),
    [(300, 1_000, 330, 1_000), (30_000, 100_000, 3_100, 10_000), (0, 500, 3, 400)],
)
def test_z_test_squared_is_the_uncorrected_2x2_chi2_of_scipy(
    hits_ref: int, n_ref: int, hits_cur: int, n_cur: int
) -> None:
    ours = stats.z_two_proportions(hits_ref, n_ref, hits_cur, n_cur)
    table = np.array([[hits_ref, n_ref - hits_ref], [hits_cur, n_cur - hits_cur]])
    theirs = sps.chi2_contingency(table, correction=False)
    _close(ours.statistic**2, theirs.statistic)
    _close(ours.p_value, theirs.pvalue)
    assert (ours.statistic > 0) == (hits_cur / n_cur > hits_ref / n_ref)
    # The effect size is the absolute log odds ratio with Woolf's standard error; when a
    # cell is empty every cell gets 0.5 more (Haldane-Anscombe).
    empty = bool((table == 0).any())
    cells = table + (0.5 if empty else 0.0)
    if empty:
        expected = cells[0, 0] * cells[1, 1] / (cells[0, 1] * cells[1, 0])
    else:
        expected = sps.contingency.odds_ratio(table, kind="sample").statistic
    _close(ours.effect_size, abs(np.log(expected)))
    _close(ours.standard_error, np.sqrt(np.sum(1.0 / cells)))


def test_z_test_of_two_constant_samples_is_no_evidence() -> None:
    ours = stats.z_two_proportions(100, 100, 50, 50)
    assert (ours.statistic, ours.p_value) == (0.0, 1.0)


def test_psi_is_the_symmetric_kl_divergence_of_scipy_after_flooring() -> None:
    ref, cur = np.array([500, 300, 200, 0]), np.array([450, 320, 210, 20])
    p = np.maximum(ref / ref.sum(), stats.PSI_EPSILON)
    q = np.maximum(cur / cur.sum(), stats.PSI_EPSILON)
    p, q = p / p.sum(), q / q.sum()
    _close(stats.psi(ref, cur), sps.entropy(p, q) + sps.entropy(q, p))


@pytest.mark.parametrize(
    ("ref", "cur"),
    [([500, 300, 200, 0], [450, 320, 210, 20]), ([1, 0], [0, 1]), ([7, 7], [7, 7])],
)
def test_jensenshannon_matches_scipy(ref: list[int], cur: list[int]) -> None:
    _close(
        stats.jensenshannon(np.array(ref), np.array(cur)),
        distance.jensenshannon(ref, cur, base=2),
    )


def test_bh_adjust_matches_scipy_false_discovery_control() -> None:
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.random(40), rng.random(10) * 1e-4, [0.0, 1.0, 0.05, 0.05]])
    np.testing.assert_allclose(
        stats.bh_adjust(p), sps.false_discovery_control(p, method="bh"), rtol=TOL, atol=TOL
    )
    assert stats.bh_adjust(np.array([])).size == 0


# -- effect sizes for the judgment: Bergsma's V, bounds, the minimum-effect test ---------


def test_cramers_v_corrected_is_bergsmas_for_equal_samples() -> None:
    ref, cur = np.array([300, 500, 200, 40]), np.array([350, 420, 230, 40])
    table = np.array([ref, cur])
    n = table.sum()
    phi2 = sps.chi2_contingency(table, correction=False).statistic / n
    r, k = table.shape
    phi2_tilde = max(0.0, phi2 - (k - 1) * (r - 1) / (n - 1))
    k_tilde, r_tilde = k - (k - 1) ** 2 / (n - 1), r - (r - 1) ** 2 / (n - 1)
    _close(stats.cramers_v_corrected(ref, cur), np.sqrt(phi2_tilde / min(k_tilde - 1, r_tilde - 1)))
    # With no difference at all it is 0, where plain V is not.
    assert stats.cramers_v_corrected(ref, ref) == 0.0
    assert stats.cramers_v_corrected(np.array([5, 0]), np.array([3, 0])) == 0.0


@pytest.mark.parametrize("test", ["ks", "chisquare", "z"])
def test_the_minimum_effect_p_value_and_the_lower_bound_agree(test: str) -> None:
    """p(H0: effect <= floor) < level exactly when the lower bound at that level clears it."""
    rng = np.random.default_rng(5)
    floor = {"ks": 0.02, "chisquare": 0.025, "z": 0.04}[test]
    n_ref, n_cur = 20_000, 15_000
    for shift in np.linspace(0.0, 0.12, 13):
        if test == "ks":
            a, b = _sorted(rng.normal(size=n_ref)), _sorted(rng.normal(shift, size=n_cur))
            outcome = stats.ks_2samp(a, b)
        elif test == "chisquare":
            p = np.array([0.4, 0.3, 0.2, 0.1])
            q = p * np.exp(shift * np.array([-1.0, 0.0, 1.0, 2.0]))
            outcome = stats.chi2_two_sample(
                rng.multinomial(n_ref, p), rng.multinomial(n_cur, q / q.sum())
            )
        else:
            hits = rng.binomial([n_ref, n_cur], [0.1, 0.1 * np.exp(shift)])
            outcome = stats.z_two_proportions(int(hits[0]), n_ref, int(hits[1]), n_cur)
        for level in (0.05, 0.005):
            p_floor = stats.min_effect_p_value(test, outcome, n_ref, n_cur, floor)
            lower = stats.effect_lower_bound(test, outcome, n_ref, n_cur, level)
            assert p_floor is not None and lower is not None
            assert (p_floor < level) == (lower > floor), (shift, level, p_floor, lower)
            assert lower <= outcome.effect_size + 1e-12


def test_bh_level_is_the_threshold_the_correction_applies() -> None:
    rng = np.random.default_rng(8)
    p = np.concatenate([rng.random(30), rng.random(5) * 1e-3])
    adjusted = stats.bh_adjust(p)
    level = stats.bh_level(adjusted, 0.05)
    assert ((adjusted < 0.05) == (p <= level)).all()
    assert stats.bh_level(stats.bh_adjust(np.array([0.5, 0.9])), 0.05) == 0.025
    assert stats.bh_level(np.array([]), 0.05) == 0.05
