"""The drift statistics, as plain functions of sorted samples or of counts.

Each function returns what scipy returns for the same inputs (the tests hold
them to 1e-9): :func:`ks_2samp` = ``scipy.stats.ks_2samp``,
:func:`wasserstein` = ``scipy.stats.wasserstein_distance``,
:func:`chi2_two_sample` = ``scipy.stats.chi2_contingency(correction=False)``,
:func:`z_two_proportions` = the same 2x2 contingency test as a z statistic,
:func:`jensenshannon` = ``scipy.spatial.distance.jensenshannon``,
:func:`psi` = ``scipy.stats.entropy(p, q) + entropy(q, p)`` and
:func:`bh_adjust` = ``scipy.stats.false_discovery_control``. They differ in
what they take: the detector holds sorted arrays and counts, so the
functions start from those and do no sorting or counting of their own.

The effect sizes, the p-values of the minimum-effect test ``H0: effect <=
floor`` (:func:`min_effect_p_value`) and the one-sided lower confidence
bounds of the effects (:func:`effect_lower_bound`) are what the judgment
reads: a column drifts only when its effect is shown above the floor.

The exact numeric tests (KS, Wasserstein) need both samples sorted. KS needs
one binary search per current value (:func:`ks_statistic`); Wasserstein
integrates over one linear-time merge of the two (:func:`ecdf_gap`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "EcdfGap",
    "Outcome",
    "bh_adjust",
    "bh_level",
    "chi2_two_sample",
    "cohens_h",
    "cramers_v_balanced",
    "cramers_v_corrected",
    "cramers_v_lower_bound",
    "ecdf_gap",
    "effect_lower_bound",
    "jensenshannon",
    "ks_2samp",
    "ks_lower_bound",
    "ks_statistic",
    "log_odds_ratio",
    "min_effect_p_value",
    "psi",
    "wasserstein",
    "z_two_proportions",
]

Floats = NDArray[np.float64]
Counts = NDArray[np.int64] | NDArray[np.float64]

#: scipy's ``ks_2samp(method="auto")`` computes the exact p-value up to this
#: sample size and Smirnov's asymptotic one above it; so does :func:`ks_2samp`.
EXACT_KS_MAX_N = 10_000

#: Smallest share a bin may have in :func:`psi`, so an empty bin does not make
#: the index infinite (Evidently uses 1e-4 too).
PSI_EPSILON = 1e-4


@dataclass(frozen=True, slots=True)
class Outcome:
    """A test's statistic, its p-value (None for a distance) and its effect size.

    ``dof`` (chi-squared) and ``standard_error`` (of the z test's log odds
    ratio) are what :func:`effect_lower_bound` needs besides the sizes.
    """

    statistic: float
    p_value: float | None
    effect_size: float
    dof: int | None = None
    standard_error: float | None = None


@dataclass(frozen=True, slots=True)
class EcdfGap:
    """The two empirical CDFs compared at every point of the merged samples.

    ``gap[k]`` is ``F_ref(x) - F_cur(x)`` at ``x = merged[k]``, taken at the
    last element of each run of equal values (elsewhere it is 0, which
    changes neither the KS maximum nor the Wasserstein integral, whose width
    is 0 there).
    """

    merged: Floats
    gap: Floats
    n_reference: int
    n_current: int


def ecdf_gap(reference_sorted: Floats, current_sorted: Floats) -> EcdfGap:
    """Merge two sorted samples and the gap between their empirical CDFs.

    A stable argsort of two concatenated sorted runs is a single merge
    (timsort finds the runs), so this is linear after the two sorts the
    caller already did.
    """
    n_ref, n_cur = reference_sorted.size, current_sorted.size
    if n_ref == 0 or n_cur == 0:
        raise ValueError("both samples need at least one value")
    both = np.concatenate((reference_sorted, current_sorted))
    order = np.argsort(both, kind="stable")
    merged = both.take(order)
    del both
    # Counts fit in int32 below 2**31 values, which halves the memory traffic.
    counter = np.dtype(np.int32) if n_ref + n_cur < 2**31 else np.dtype(np.int64)
    ref_below = np.cumsum(order < n_ref, dtype=counter)
    del order
    cur_below = np.arange(1, n_ref + n_cur + 1, dtype=counter)
    np.subtract(cur_below, ref_below, out=cur_below)
    gap: Floats = np.divide(ref_below, n_ref)
    gap -= np.divide(cur_below, n_cur)
    del ref_below, cur_below
    inside_tie = np.empty(merged.size, dtype=bool)
    np.equal(merged[1:], merged[:-1], out=inside_tie[:-1])
    inside_tie[-1] = False
    if inside_tie.any():
        gap[inside_tie] = 0.0
    return EcdfGap(merged, gap, n_ref, n_cur)


def ks_statistic(reference_sorted: Floats, current_sorted: Floats) -> float:
    """The two-sided KS statistic D of two sorted samples, without merging them.

    With ``F`` the reference CDF (``n`` values) and ``G`` the current one
    (``m`` values, ``b_0 <= ... <= b_{m-1}``), ``left_j`` and ``right_j``
    the number of reference values below and at-or-below ``b_j``:

    * ``max(G - F) = max_j ((j + 1) / m - right_j / n)``: at each current
      value (inside a run of equal values ``j + 1`` undercounts ``G``,
      which only lowers that term; the run's last value has it exact);
    * ``max(F - G) = max(0, max_j (left_j / n - j / m))``: between two
      current values ``G`` is flat and ``F`` highest just below the next one,
      ``b_j``; below ``b_0`` ``G`` is 0; past the last one ``G`` is 1.

    These are the largest and smallest of scipy's ``cdf1 - cdf2`` over the
    pooled values, as the same quotients, so D is the same number. ``left``
    comes from one stable merge of the two sorted runs (the current values
    first, so they precede equal reference values); ``right`` differs from
    it only where a current value also occurs in the reference, and is
    searched for those alone.
    """
    n, m = reference_sorted.size, current_sorted.size
    if n == 0 or m == 0:
        raise ValueError("both samples need at least one value")
    order = np.argsort(np.concatenate((current_sorted, reference_sorted)), kind="stable")
    left = np.flatnonzero(order < m)  # where each current value landed in the merge
    del order
    left -= np.arange(m, dtype=left.dtype)  # minus the current values before it
    right = left
    tied = reference_sorted[np.minimum(left, n - 1)] == current_sorted
    if tied.any():
        right = left.copy()
        right[tied] = np.searchsorted(reference_sorted, current_sorted[tied], side="right")
    steps = np.arange(m + 1, dtype=np.float64)
    steps /= m
    below: float = float(np.max(left / n - steps[:-1]))
    above: float = float(np.max(steps[1:] - right / n))
    return max(below, above, 0.0)


def ks_2samp(
    reference_sorted: Floats, current_sorted: Floats, gap: EcdfGap | None = None
) -> Outcome:
    """Two-sample Kolmogorov-Smirnov test, two-sided: D, p-value, and D as the effect size.

    The p-value is exact up to :data:`EXACT_KS_MAX_N` values a side (scipy's
    own routine, on samples that small) and Smirnov's asymptotic
    distribution above, as ``scipy.stats.ks_2samp(method="auto")`` does.
    """
    from scipy import stats

    if gap is not None:
        d = float(np.abs(gap.gap).max())
    else:
        d = ks_statistic(reference_sorted, current_sorted)
    n_ref, n_cur = reference_sorted.size, current_sorted.size
    if max(n_ref, n_cur) <= EXACT_KS_MAX_N:
        with warnings.catch_warnings():
            # scipy falls back to the asymptotic p-value itself when the exact
            # computation does not converge, and says so with a warning.
            warnings.simplefilter("ignore", RuntimeWarning)
            exact = stats.ks_2samp(reference_sorted, current_sorted)
        # scipy's exact branch rounds D to the nearest multiple of 1/lcm(n, m).
        d, p = float(exact.statistic), float(exact.pvalue)
    else:
        m, n = sorted((float(n_ref), float(n_cur)), reverse=True)
        p = float(np.clip(_kstwo_sf(d, int(np.round(m * n / (m + n)))), 0.0, 1.0))
    return Outcome(statistic=d, p_value=p, effect_size=d)


def _kstwo_sf(d: float, n: int) -> float:
    """``scipy.stats.kstwo.sf(d, n)``, with its slow branch vectorised.

    For large ``n`` and ``2.2 <= n * d**2 < 370`` (p-values between about
    0.03 and 1e-160: exactly the columns that drifted) scipy evaluates
    ``2 * smirnov(n, d)``, the Birnbaum-Tingey sum of ``n (1 - d)`` terms,
    in a scalar loop that holds the GIL for 0.3-1 s at a million rows.
    The same sum in numpy log space takes a tenth of that and agrees to
    about 1e-9 relative (so within 1e-10 absolute, the p-value being
    below 0.03 there).
    """
    from scipy import stats

    t = n * d
    if n > 140 and 1.0 < t < n - 1 and d < 0.5 and 2.2 <= t * d < 370.0:
        return 2.0 * _smirnov(n, d)
    return float(stats.kstwo.sf(d, n))


def _smirnov(n: int, d: float) -> float:
    """P(D+ >= d) for the one-sided statistic of ``n`` values (Birnbaum-Tingey), in log space."""
    from scipy import special

    j = np.arange(int(np.floor(n * (1.0 - d))) + 1, dtype=np.float64)
    rest = 1.0 - d - j / n
    keep = rest > 0  # a term with a zero base and a positive power vanishes
    j, rest = j[keep], rest[keep]
    log_terms = (
        special.gammaln(n + 1.0)
        - special.gammaln(j + 1.0)
        - special.gammaln(n - j + 1.0)
        + (j - 1.0) * np.log(d + j / n)
        + (n - j) * np.log(rest)
    )
    peak = float(log_terms.max())
    return float(d * math.exp(peak) * np.exp(log_terms - peak).sum())


def wasserstein(
    reference_sorted: Floats, current_sorted: Floats, gap: EcdfGap | None = None
) -> float:
    """First Wasserstein distance between the two samples (the area between their CDFs)."""
    g = gap if gap is not None else ecdf_gap(reference_sorted, current_sorted)
    widths = np.diff(g.merged)
    return float(np.sum(np.multiply(np.abs(g.gap[:-1]), widths)))


def chi2_two_sample(reference_counts: Counts, current_counts: Counts) -> Outcome:
    """Chi-squared test of homogeneity on the 2 x k table of counts, without Yates' correction.

    Categories counted in neither sample are dropped (they carry no
    information and would divide by zero). The effect size is
    :func:`cramers_v_corrected`.
    """
    from scipy import stats

    table = np.vstack((reference_counts, current_counts)).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    if rows.min() <= 0:
        raise ValueError("both samples need at least one counted value")
    dof = cols.size - 1
    if dof == 0:
        return Outcome(statistic=0.0, p_value=1.0, effect_size=0.0, dof=0)
    expected = np.outer(rows, cols) / rows.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    p = float(stats.chi2.sf(statistic, dof))
    return Outcome(statistic, p, cramers_v_corrected(table[0], table[1]), dof=dof)


def z_two_proportions(
    reference_hits: int, reference_n: int, current_hits: int, current_n: int
) -> Outcome:
    """Two-sided z-test for two proportions with the pooled variance.

    ``z`` is positive when the current proportion is higher; ``z**2`` is the
    uncorrected chi-squared statistic of the 2 x 2 table. The effect size is
    the absolute log odds ratio (:func:`log_odds_ratio`), with its standard
    error.
    """
    from scipy import stats

    if reference_n <= 0 or current_n <= 0:
        raise ValueError("both samples need at least one counted value")
    p_ref, p_cur = reference_hits / reference_n, current_hits / current_n
    pooled = (reference_hits + current_hits) / (reference_n + current_n)
    variance = pooled * (1.0 - pooled) * (1.0 / reference_n + 1.0 / current_n)
    lor, se = log_odds_ratio(reference_hits, reference_n, current_hits, current_n)
    if variance <= 0.0:
        return Outcome(0.0, 1.0, abs(lor), standard_error=se)
    z = (p_cur - p_ref) / math.sqrt(variance)
    return Outcome(z, float(2.0 * stats.norm.sf(abs(z))), abs(lor), standard_error=se)


def log_odds_ratio(
    reference_hits: int, reference_n: int, current_hits: int, current_n: int
) -> tuple[float, float]:
    """The log odds ratio of the current rate against the reference one, and its standard error.

    ``ln((c / d) / (a / b))`` for ``a`` hits and ``b`` misses in the
    reference, ``c`` and ``d`` in the current data; Woolf's standard error
    ``sqrt(1/a + 1/b + 1/c + 1/d)``. When a cell is empty every cell gets
    0.5 more (Haldane-Anscombe), so a rate rising from zero has a finite,
    very uncertain, estimate instead of an infinite one.
    """
    cells = [
        float(reference_hits),
        float(reference_n - reference_hits),
        float(current_hits),
        float(current_n - current_hits),
    ]
    if min(cells) <= 0.0:
        cells = [c + 0.5 for c in cells]
    a, b, c, d = cells
    return math.log(c / d) - math.log(a / b), math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h, the arcsine-stabilised difference of two proportions (0.2 is "small")."""
    return abs(2.0 * math.asin(math.sqrt(p1)) - 2.0 * math.asin(math.sqrt(p2)))


def cramers_v_balanced(reference_counts: Counts, current_counts: Counts) -> float:
    """Cramér's V of the two distributions as if both samples had the same size.

    Plain V shrinks as the samples grow unequal (a 10,000-row window against
    a 1,000,000-row reference shows a tenth of the V of the same shift in
    equal samples), so a floor on it would hide drift in small windows. On
    the two distributions ``p`` and ``q`` this is ``sqrt(sum((p - q)**2 /
    (p + q)) / 2)``, which equals scipy's ``association(method="cramer")``
    for equal sample sizes; 0.1 is Cohen's "small".
    """
    p = np.asarray(reference_counts, dtype=np.float64)
    q = np.asarray(current_counts, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    total = p + q
    seen = total > 0
    return float(math.sqrt(np.sum((p[seen] - q[seen]) ** 2 / total[seen]) / 2.0))


def cramers_v_corrected(reference_counts: Counts, current_counts: Counts) -> float:
    """:func:`cramers_v_balanced` with Bergsma's (2013) bias correction.

    Plain V is biased upwards: with no drift at all its square is about
    ``(k - 1) / N`` for ``k`` categories (``sqrt(k / 2n)`` for two samples of
    ``n``), which at 50 categories is as large as any sensible floor. With
    ``phi2 = V_balanced**2`` and ``N = 4 n m / (n + m)`` (the total of two
    equal samples with the same information; ``2n`` when ``n == m``)::

        phi2~ = max(0, phi2 - (k - 1) / (N - 1))
        k~    = k - (k - 1)**2 / (N - 1);   r~ = 2 - 1 / (N - 1)
        V~    = sqrt(phi2~ / min(k~ - 1, r~ - 1))

    For equal samples this is Bergsma's corrected V of the 2 x k table.
    """
    p = np.asarray(reference_counts, dtype=np.float64)
    q = np.asarray(current_counts, dtype=np.float64)
    n, m = float(p.sum()), float(q.sum())
    k = int(np.count_nonzero((p + q) > 0))
    if k < 2 or n <= 0 or m <= 0:
        return 0.0
    total = 4.0 * n * m / (n + m)
    if total <= 2.0:
        return 0.0
    phi2 = cramers_v_balanced(p, q) ** 2
    corrected = max(0.0, phi2 - (k - 1) / (total - 1.0))
    k_tilde = k - (k - 1) ** 2 / (total - 1.0)
    r_tilde = 2.0 - 1.0 / (total - 1.0)
    denominator = min(k_tilde - 1.0, r_tilde - 1.0)
    if denominator <= 0.0:
        return 0.0
    return math.sqrt(corrected / denominator)


# -- lower confidence bounds of the effect sizes (the minimum-effect test) ------


def ks_lower_bound(d: float, n_reference: int, n_current: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` lower confidence bound of the true KS distance.

    The observed ``D`` exceeds the true one by at most the largest deviation
    of the two empirical CDFs from their own distributions, which exceeds
    ``c`` with probability about ``exp(-2 c**2 n m / (n + m))`` (Smirnov's
    one-sided limit; DKW-type bound). So ``D - c`` with that probability set
    to ``alpha`` is a lower bound, conservative by construction: a shift
    exactly at the floor is flagged in at most ``alpha`` of runs (simulated:
    0-5%), while the normal approximation at the maximising point is not (the
    maximum picks up noise: 12-22% of runs at the floor).
    """
    if n_reference <= 0 or n_current <= 0:
        return 0.0
    scale = (n_reference + n_current) / (n_reference * n_current)
    return d - math.sqrt(math.log(1.0 / alpha) / 2.0 * scale)


def cramers_v_lower_bound(
    statistic: float, dof: int, n_reference: float, n_current: float, alpha: float
) -> float:
    """One-sided ``1 - alpha`` lower confidence bound of the (balanced) Cramér's V.

    Under drift the chi-squared statistic is noncentral chi-squared with
    ``dof`` degrees of freedom and noncentrality ``lambda = N V**2``
    (``N = 4 n m / (n + m)``, as in :func:`cramers_v_corrected`). The bound
    inverts that distribution: the smallest ``lambda`` under which a
    statistic this large has probability ``alpha``. It accounts for the
    number of categories, so 50 categories at 5,000 rows cannot clear a
    floor on noise alone.
    """
    from scipy import optimize, stats

    if dof <= 0 or n_reference <= 0 or n_current <= 0 or statistic <= 0.0:
        return 0.0
    total = 4.0 * n_reference * n_current / (n_reference + n_current)
    if float(stats.chi2.sf(statistic, dof)) >= alpha:
        return 0.0  # not even evidence of a change

    def excess(lam: float) -> float:
        return float(stats.ncx2.sf(statistic, dof, lam)) - alpha

    # sf grows with lambda; at lambda = statistic the mean (dof + lambda) is past it.
    high = statistic
    while excess(high) < 0.0:  # pragma: no cover - the bracket above always holds
        high *= 2.0
    lam = optimize.brentq(excess, 0.0, high, xtol=1e-10 * max(1.0, high), rtol=1e-10)
    return math.sqrt(max(lam, 0.0) / total)


def effect_lower_bound(
    test: str, outcome: Outcome, n_reference: float, n_current: float, level: float
) -> float | None:
    """The one-sided ``1 - level`` lower bound of ``outcome``'s effect size; None for distances."""
    from scipy import stats

    if test == "ks":
        bound = ks_lower_bound(outcome.effect_size, int(n_reference), int(n_current), level)
        return max(0.0, bound)
    if test == "chisquare":
        return cramers_v_lower_bound(
            outcome.statistic, outcome.dof or 0, n_reference, n_current, level
        )
    if test == "z":
        se = outcome.standard_error
        if se is None:
            return None
        return max(0.0, outcome.effect_size - float(stats.norm.isf(level)) * se)
    return None


def min_effect_p_value(
    test: str, outcome: Outcome, n_reference: float, n_current: float, floor: float
) -> float | None:
    """The p-value of the minimum-effect test, ``H0: effect <= floor``; None for distances.

    The chance of an outcome this far above the floor were the effect exactly
    at the floor: ``exp(-2 (D - floor)**2 n m / (n + m))`` for KS (the bound of
    :func:`ks_lower_bound`), the noncentral chi-squared tail at ``lambda = N
    floor**2`` for chi-squared, the normal tail of ``(|log OR| - floor) / se``
    for z. It is below ``level`` exactly when :func:`effect_lower_bound` at
    that level is above the floor, so the two can be read for each other.
    """
    from scipy import stats

    if test == "ks":
        excess = outcome.effect_size - floor
        if excess <= 0.0 or n_reference <= 0 or n_current <= 0:
            return 1.0
        scale = n_reference * n_current / (n_reference + n_current)
        return min(1.0, math.exp(-2.0 * excess * excess * scale))
    if test == "chisquare":
        dof = outcome.dof or 0
        if dof <= 0 or n_reference <= 0 or n_current <= 0:
            return 1.0
        total = 4.0 * n_reference * n_current / (n_reference + n_current)
        return float(stats.ncx2.sf(outcome.statistic, dof, total * floor * floor))
    if test == "z":
        se = outcome.standard_error
        if se is None or se <= 0.0:
            return 1.0
        return float(stats.norm.sf((outcome.effect_size - floor) / se))
    return None


def bh_level(adjusted: Floats, alpha: float) -> float:
    """The level Benjamini-Hochberg leaves each comparison: ``max(k, 1) * alpha / m``.

    ``k`` of the ``m`` adjusted p-values are below ``alpha``; a raw p-value is
    rejected exactly when it is at most ``k * alpha / m``. With none rejected
    the level is ``alpha / m``, which no raw p-value reached. A confidence
    bound at this level agrees with the corrected decision.
    """
    m = int(np.asarray(adjusted).size)
    if m == 0:
        return alpha
    k = int(np.count_nonzero(np.asarray(adjusted) < alpha))
    return max(k, 1) * alpha / m


def psi(reference_counts: Counts, current_counts: Counts, epsilon: float = PSI_EPSILON) -> float:
    """Population Stability Index: ``sum((q - p) * ln(q / p))`` over bins or categories.

    Shares below ``epsilon`` are raised to it and each distribution is
    renormalised, so an empty bin costs a bounded amount instead of making
    the index infinite; it then equals ``entropy(p, q) + entropy(q, p)``.
    """
    p = _floored_shares(reference_counts, epsilon)
    q = _floored_shares(current_counts, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def jensenshannon(reference_counts: Counts, current_counts: Counts, base: float = 2.0) -> float:
    """Jensen-Shannon distance (the square root of the divergence), base 2 so it lies in [0, 1]."""
    p = np.asarray(reference_counts, dtype=np.float64)
    q = np.asarray(current_counts, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0
    divergence = (_rel_entr(p, m) + _rel_entr(q, m)) / math.log(base)
    return math.sqrt(max(divergence, 0.0) / 2.0)


def bh_adjust(p_values: Floats) -> Floats:
    """Benjamini-Hochberg adjusted p-values (rejecting ``adjusted < alpha`` keeps FDR <= alpha)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    scaled = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted


def _floored_shares(counts: Counts, epsilon: float) -> Floats:
    shares = np.asarray(counts, dtype=np.float64)
    shares = np.maximum(shares / shares.sum(), epsilon)
    normalised: Floats = shares / shares.sum()
    return normalised


def _rel_entr(x: Floats, y: Floats) -> float:
    """``sum(x * ln(x / y))`` with ``0 * ln 0 = 0``, as ``scipy.special.rel_entr``."""
    seen = x > 0
    return float(np.sum(x[seen] * np.log(x[seen] / y[seen])))
