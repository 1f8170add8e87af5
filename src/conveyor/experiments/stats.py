"""The statistics of an A-B experiment: pure functions of counts, sums and sums of squares.

::

    n = sample_size_proportions(0.10, 0.02, alpha=0.05, power=0.8)     # 3841 per arm
    fixed = two_proportion_ztest(410, 4000, 480, 4000)                 # z-test and its CI
    seq = msprt(Summary.of_proportion(410, 4000), Summary.of_proportion(480, 4000), tau=0.02)
    seq.p_value, seq.ci                                                # always valid

Every function takes numbers or numpy arrays of the same shape (the simulations call them
on ``(runs, checkpoints)`` arrays), numpy and scipy only, no store and no server.

A comparison is always *treatment minus control*. The four parts:

- **Sample size up front** (:func:`sample_size_proportions`, :func:`sample_size_means`):
  per arm, two-sided, equal allocation.
- **Fixed-horizon tests** (:func:`two_proportion_ztest`, :func:`welch_ttest`): valid
  once, at the planned sample size; looking at them repeatedly inflates the false
  positive rate (the simulations in ``tests/experiments`` show how much).
- **Sequential test** (:func:`msprt`): the mixture sequential probability ratio test
  with a normal mixture, whose p-value and confidence sequence stay valid however
  often they are looked at (:func:`always_valid` takes their running minimum and
  intersection over the checkpoints).
- **Sample ratio mismatch** (:func:`srm_check`): a chi-square test of the arms' counts
  against the designed split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from conveyor.errors import InvalidInputError

__all__ = [
    "FixedTest",
    "SequentialTest",
    "Summary",
    "always_valid",
    "msprt",
    "sample_size_means",
    "sample_size_proportions",
    "srm_check",
    "two_proportion_ztest",
    "welch_ttest",
]

Number = Any  # float or numpy array (vectorised callers)

#: SRM is flagged below this p-value: strict, because an assignment bug shows as a
#: tiny p-value at real traffic while a 0.05 cut would cry wolf in 1 of 20 healthy tests.
SRM_ALPHA = 0.001


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def _check_rates(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise InvalidInputError(f"alpha is in (0, 1), got {alpha}", field="alpha")
    if not 0 < power < 1:
        raise InvalidInputError(f"power is in (0, 1), got {power}", field="power")


# -- sample size ------------------------------------------------------------------------


def sample_size_proportions(
    baseline: float,
    mde: float,
    *,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Units per arm to detect a change of ``mde`` from a ``baseline`` rate (two-sided).

    ``mde`` is absolute (0.02: 10 % -> 12 %) or, with ``relative``, a fraction of the
    baseline (0.2: 10 % -> 12 %).

    Reference: Fleiss, Levin & Paik, *Statistical Methods for Rates and Proportions*
    (3rd ed., 2003), eq. 4.14 (without continuity correction); Chow, Shao & Wang,
    *Sample Size Calculations in Clinical Research* (2008), sec. 4.2::

        n = (z_{1-a/2} sqrt(2 pbar qbar) + z_{1-b} sqrt(p1 q1 + p2 q2))^2 / delta^2
    """
    _check_rates(alpha, power)
    if not 0 < baseline < 1:
        raise InvalidInputError(f"baseline rate is in (0, 1), got {baseline}", field="baseline")
    delta = mde * baseline if relative else mde
    if delta == 0 or not 0 < baseline + delta < 1:
        raise InvalidInputError(
            f"minimum detectable effect {mde} from {baseline} leaves (0, 1) or is 0", field="mde"
        )
    p1, p2 = baseline, baseline + delta
    pbar = (p1 + p2) / 2
    za, zb = _z(1 - alpha / 2), _z(power)
    n = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil((n / delta) ** 2)


def sample_size_means(
    sd: float,
    mde: float,
    *,
    baseline: float | None = None,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Units per arm to detect a change of ``mde`` in a mean whose standard deviation is
    ``sd`` (two-sided; with ``relative``, ``mde`` is a fraction of ``baseline``).

    Reference: Chow, Shao & Wang (2008), sec. 3.2.1 (two-sample, equal variances,
    normal approximation)::

        n = 2 (z_{1-a/2} + z_{1-b})^2 sd^2 / delta^2
    """
    _check_rates(alpha, power)
    if not sd > 0:
        raise InvalidInputError(f"standard deviation must be > 0, got {sd}", field="sd")
    if relative:
        if baseline is None or baseline == 0:
            raise InvalidInputError("a relative effect needs a non-zero baseline", field="mde")
        delta = mde * baseline
    else:
        delta = mde
    if delta == 0:
        raise InvalidInputError("the minimum detectable effect is not 0", field="mde")
    za, zb = _z(1 - alpha / 2), _z(power)
    return math.ceil(2 * ((za + zb) * sd / delta) ** 2)


# -- summaries ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """One arm's data as sufficient statistics: units, sum and sum of squares.

    A proportion is the same with 0/1 outcomes (sum = sum of squares = successes).
    Fields may be numpy arrays (one value per run or checkpoint).
    """

    n: Number
    total: Number
    squares: Number

    @classmethod
    def of_proportion(cls, successes: Number, n: Number) -> Summary:
        return cls(n, successes, successes)

    @classmethod
    def of_values(cls, values: Sequence[float] | np.ndarray) -> Summary:
        array = np.asarray(values, dtype=np.float64)
        return cls(int(array.size), float(array.sum()), float((array * array).sum()))

    @property
    def mean(self) -> Number:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.divide(self.total, self.n)

    @property
    def variance(self) -> Number:
        """Sample variance (n - 1 in the denominator)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.asarray(self.n, dtype=np.float64)
            v = (np.asarray(self.squares) - np.asarray(self.total) ** 2 / n) / (n - 1)
            return np.maximum(v, 0.0)


# -- fixed-horizon tests --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FixedTest:
    """A fixed-horizon comparison: the difference (treatment - control), its two-sided
    ``1 - alpha`` confidence interval, the statistic and its two-sided p-value."""

    diff: Number
    ci_low: Number
    ci_high: Number
    statistic: Number
    p_value: Number
    df: Number = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "diff": _f(self.diff),
            "ci": [_f(self.ci_low), _f(self.ci_high)],
            "statistic": _f(self.statistic),
            "p_value": _f(self.p_value),
            **({"df": _f(self.df)} if self.df is not None else {}),
        }


def two_proportion_ztest(
    x_control: Number,
    n_control: Number,
    x_treatment: Number,
    n_treatment: Number,
    *,
    alpha: float = 0.05,
) -> FixedTest:
    """Two-proportion z-test (pooled standard error under H0: p1 = p2) with the Wald
    interval of the difference (unpooled standard error).

    Reference: Agresti, *Categorical Data Analysis* (3rd ed., 2013), sec. 3.1.2 (the
    Wald interval) and Fleiss et al. (2003), sec. 3.2 (the pooled z statistic; its
    square is Pearson's chi-square of the 2x2 table, ``scipy.stats.chi2_contingency``
    without correction).
    """
    from scipy.stats import norm

    with np.errstate(invalid="ignore", divide="ignore"):
        n1, n2 = np.asarray(n_control, np.float64), np.asarray(n_treatment, np.float64)
        p1, p2 = np.asarray(x_control) / n1, np.asarray(x_treatment) / n2
        pooled = (np.asarray(x_control) + np.asarray(x_treatment)) / (n1 + n2)
        se0 = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        diff = p2 - p1
        z = np.where(se0 > 0, diff / se0, 0.0)
        se = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    half = _z(1 - alpha / 2) * se
    return FixedTest(
        _out(diff), _out(diff - half), _out(diff + half), _out(z), _out(2 * norm.sf(np.abs(z)))
    )


def welch_ttest(control: Summary, treatment: Summary, *, alpha: float = 0.05) -> FixedTest:
    """Welch's unequal-variance t-test with the Welch-Satterthwaite degrees of freedom,
    and the matching interval of the difference in means.

    Reference: Welch, "The generalization of Student's problem when several different
    population variances are involved", *Biometrika* 34 (1947); the same as
    ``scipy.stats.ttest_ind(..., equal_var=False)``.
    """
    from scipy.stats import t as student

    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.asarray(control.variance) / np.asarray(control.n, np.float64)
        b = np.asarray(treatment.variance) / np.asarray(treatment.n, np.float64)
        se = np.sqrt(a + b)
        diff = np.asarray(treatment.mean) - np.asarray(control.mean)
        df = (a + b) ** 2 / (
            a**2 / (np.asarray(control.n) - 1) + b**2 / (np.asarray(treatment.n) - 1)
        )
        t = np.where(se > 0, diff / se, 0.0)
        df = np.where(np.isfinite(df), df, 1.0)
    half = student.ppf(1 - alpha / 2, df) * se
    p = 2 * student.sf(np.abs(t), df)
    return FixedTest(_out(diff), _out(diff - half), _out(diff + half), _out(t), _out(p), _out(df))


# -- sequential: mSPRT -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SequentialTest:
    """The mixture SPRT at one look (or, from :func:`always_valid`, over all looks so
    far): the difference, the likelihood ratio, the always-valid p-value and the
    ``1 - alpha`` confidence sequence."""

    diff: Number
    ratio: Number
    p_value: Number
    ci_low: Number
    ci_high: Number

    def to_dict(self) -> dict[str, Any]:
        return {
            "diff": _f(self.diff),
            "likelihood_ratio": _f(self.ratio),
            "p_value": _f(self.p_value),
            "ci": [_f(self.ci_low), _f(self.ci_high)],
        }


def msprt(
    control: Summary,
    treatment: Summary,
    *,
    tau: float,
    alpha: float = 0.05,
    proportion: bool = False,
) -> SequentialTest:
    """The mixture sequential probability ratio test with a normal mixture N(0, tau^2)
    over the difference theta = mean(treatment) - mean(control), at one look.

    With ``d`` the observed difference and ``v`` its variance (s1^2/n1 + s2^2/n2,
    plug-in), the mixture likelihood ratio against H0: theta = 0 is::

        L = sqrt(v / (v + tau^2)) exp(tau^2 d^2 / (2 v (v + tau^2)))

    (for equal arms, v = 2 sigma^2 / n gives the paper's formula). ``1/L`` is this
    look's p-value; the always-valid p-value is the running minimum over the looks
    (:func:`always_valid`), and the confidence sequence is every theta whose own
    ratio is below 1/alpha::

        |d - theta| <= sqrt(2 v (v + tau^2) / tau^2 * ln(sqrt((v + tau^2) / v) / alpha))

    For proportions (``proportion=True``) the test's variance is the pooled rate's
    (H0 holds both arms equal) and the interval's the arms' own.

    ``tau`` is the mixture's spread: the size of effect the test is most sensitive
    to; the experiment uses its minimum detectable effect.

    Reference: Johari, Koomen, Pekelis & Walsh, "Always valid inference: continuous
    monitoring of A/B tests", *Operations Research* 70(3), 2022 (sec. 4, eq. (4)
    and Proposition 4); Robbins, "Statistical methods related to the law of the
    iterated logarithm", *Ann. Math. Statist.* 41 (1970) for the normal mixture.
    """
    if not tau > 0:
        raise InvalidInputError(f"tau must be > 0, got {tau}", field="tau")
    tau2 = tau * tau
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        n1 = np.asarray(control.n, np.float64)
        n2 = np.asarray(treatment.n, np.float64)
        d = np.asarray(treatment.mean) - np.asarray(control.mean)
        if proportion:
            p1, p2 = np.asarray(control.mean), np.asarray(treatment.mean)
            pooled = (np.asarray(control.total) + np.asarray(treatment.total)) / (n1 + n2)
            v0 = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
            v = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
        else:
            v = np.asarray(control.variance) / n1 + np.asarray(treatment.variance) / n2
            v0 = v
        ok0 = (v0 > 0) & np.isfinite(v0)
        v0s = np.where(ok0, v0, 1.0)
        log_ratio = 0.5 * np.log(v0s / (v0s + tau2)) + tau2 * d * d / (2 * v0s * (v0s + tau2))
        log_ratio = np.where(ok0, log_ratio, 0.0)
        ratio = np.exp(np.minimum(log_ratio, 700.0))
        p = np.minimum(1.0, np.exp(-log_ratio))
        ok = (v > 0) & np.isfinite(v)
        vs = np.where(ok, v, 1.0)
        half = np.sqrt(
            2 * vs * (vs + tau2) / tau2 * (0.5 * np.log((vs + tau2) / vs) - math.log(alpha))
        )
        half = np.where(ok, half, np.inf)
    return SequentialTest(_out(d), _out(ratio), _out(p), _out(d - half), _out(d + half))


def always_valid(looks: SequentialTest, axis: int = -1) -> SequentialTest:
    """Fold a sequence of looks (the last axis: checkpoints in time order) into what
    is valid after them all: the running minimum of the p-value and the running
    intersection of the confidence sequence (Johari et al. 2022, sec. 3)."""
    p = np.minimum.accumulate(np.asarray(looks.p_value, np.float64), axis=axis)
    low = np.maximum.accumulate(np.asarray(looks.ci_low, np.float64), axis=axis)
    high = np.minimum.accumulate(np.asarray(looks.ci_high, np.float64), axis=axis)
    return SequentialTest(looks.diff, looks.ratio, p, low, high)


# -- sample ratio mismatch ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SrmResult:
    """The chi-square test of the arms' counts against the designed split."""

    counts: list[int]
    expected_share: list[float]
    statistic: float
    p_value: float
    mismatch: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "expected_share": self.expected_share,
            "chi2": _f(self.statistic),
            "p_value": _f(self.p_value),
            "mismatch": self.mismatch,
        }


def srm_check(
    counts: Sequence[int], weights: Sequence[float], *, alpha: float = SRM_ALPHA
) -> SrmResult:
    """Pearson's chi-square goodness of fit of the arms' unit counts to the designed
    weights (``scipy.stats.chisquare``); a mismatch below ``alpha`` (0.001) means the
    assignment or the logging is broken and the comparison cannot be trusted.

    Reference: Fabijan et al., "Diagnosing sample ratio mismatch in online controlled
    experiments", KDD 2019.
    """
    from scipy.stats import chisquare

    if len(counts) != len(weights) or len(counts) < 2:
        raise InvalidInputError("one count per arm, two arms or more", field="counts")
    total_w = float(sum(weights))
    if total_w <= 0 or any(w < 0 for w in weights):
        raise InvalidInputError("weights are >= 0 and not all 0", field="weights")
    share = [w / total_w for w in weights]
    n = int(sum(counts))
    if n == 0:
        return SrmResult([int(c) for c in counts], share, 0.0, 1.0, False)
    expected = [s * n for s in share]
    stat, p = chisquare(list(counts), expected)
    return SrmResult([int(c) for c in counts], share, float(stat), float(p), bool(p < alpha))


# -- helpers ------------------------------------------------------------------------------------


def _out(value: Any) -> Any:
    array = np.asarray(value)
    return float(array) if array.ndim == 0 else array


def _f(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
