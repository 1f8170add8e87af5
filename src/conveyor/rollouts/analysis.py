"""The judgement of one rollout step: a pure function over the two arms' traffic.

::

    judgement = analyze(canary, stable, AnalysisSpec(), slo=SLOLimits(p95_ms=50))
    judgement.outcome        # "pass", "fail" or "wait" (too little traffic yet)
    judgement.report         # a Report of CheckResults, saved by the controller

An :class:`ArmSample` is what one arm did over the step's window: requests, server
errors, the answered requests' latencies, and (when numeric) its outputs. The
controller reads them from the monitoring query layer (:mod:`.sampling`); the
judgement-quality simulations build them with numpy. Both call :func:`analyze`.

The tests are one-sided and exact, so that a small canary arm is judged honestly:

- **errors**: the canary's error count against a binomial with the limit rate (the
  lower of the SLO's ``1 - availability`` and ``stable rate * (1 + max_error_increase)
  + error_slack``); it fails when that count is improbable (p < ``alpha``);
- **p95 latency**: ``canary p95 <= t`` means at most 5 % of its requests are slower
  than ``t``; with ``t`` the lower of the SLO's p95 and ``stable p95 * (1 +
  max_latency_increase)``, it fails when the share slower than ``t`` is improbably
  above 5 % (p < ``alpha``);
- **prediction drift**: PSI of the canary's outputs against the stable's, on ten bins
  at the stable's deciles (:func:`conveyor.data.drift.stats.psi`), over ``max_psi``
  and beyond chance (a chi-square test of the bins' counts, p < ``alpha``);
- **quality / business metric** (where feedback labels exist): the canary's value at
  most ``max_quality_drop`` below the stable's;
- **shadow agreement** (a shadow phase): the share of answers that agree with the
  primary's at least ``min_agreement``;
- **user checks**: ``module:function(canary, stable, spec)`` returning CheckResults.

A significant failure fails the step at once, even before ``min_requests``; a step
with fewer canary requests than ``min_requests`` and no failure waits (the controller
extends it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from conveyor.checks.result import CheckResult, Report
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from conveyor.rollouts.settings import AnalysisSpec

__all__ = ["ArmSample", "Judgement", "Outcome", "SLOLimits", "analyze", "load_check"]

Outcome = Literal["pass", "fail", "wait"]
_EMPTY = np.zeros(0, dtype=np.float64)
_MIN_DRIFT = 100


@dataclass(frozen=True, slots=True)
class ArmSample:
    """One arm over one window. ``errors`` are server errors among ``requests``;
    ``latencies_ms`` the answered requests'; ``outputs`` numeric outputs (or empty);
    ``agree`` (shadow only) how many of the answers agreed with the primary's."""

    requests: int
    errors: int = 0
    latencies_ms: NDArray[np.float64] = field(default_factory=lambda: _EMPTY)
    outputs: NDArray[np.float64] = field(default_factory=lambda: _EMPTY)
    quality: float | None = None
    business: float | None = None
    agree: int | None = None
    #: The metric ``quality`` is (its direction from conveyor.checks.metrics); None: higher
    #: is better.
    quality_metric: str | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p95_ms": round(float(np.quantile(lat, 0.95)), 3) if lat.size else None,
            "outputs": int(self.outputs.size),
            "quality": self.quality,
            "quality_metric": self.quality_metric,
            "business": self.business,
            "agree": self.agree,
        }


@dataclass(frozen=True, slots=True)
class SLOLimits:
    """The model's SLO as the analysis holds a canary to it (None: not declared)."""

    p95_ms: float | None = None
    error_rate: float | None = None  # 1 - slos.availability


@dataclass(frozen=True, slots=True)
class Judgement:
    outcome: Outcome
    report: Report
    reason: str

    @property
    def failed(self) -> bool:
        return self.outcome == "fail"


def analyze(
    canary: ArmSample,
    stable: ArmSample | None,
    spec: AnalysisSpec,
    *,
    slo: SLOLimits | None = None,
    subject: str = "rollout",
    shadow: bool = False,
) -> Judgement:
    """Judge a step: ``fail`` on any significant error-level failure, ``wait`` while the
    canary has fewer than ``spec.min_requests`` requests, else ``pass``.

    ``stable`` None (the 100 % step: no stable traffic left) holds the canary to the
    SLO alone.
    """
    slo = slo or SLOLimits()
    enough = canary.requests >= spec.min_requests
    report = Report(subject, kind="rollout-step")
    report.add(
        CheckResult(
            "min_requests",
            enough,
            canary.requests,
            spec.min_requests,
            "enough canary requests to judge"
            if enough
            else "too little traffic yet: the step is extended",
            severity="warning",
        )
    )
    report.add(_error_check(canary, stable, spec, slo))
    latency = _latency_check(canary, stable, spec, slo)
    if latency is not None:
        report.add(latency)
    if enough:
        for check in (
            _drift_check(canary, stable, spec),
            _metric_check("quality", canary.quality, stable, spec),
            _metric_check("business", canary.business, stable, spec),
            _agreement_check(canary, spec) if shadow else None,
        ):
            if check is not None:
                report.add(check)
        for path in spec.checks:
            report.add(*_user_checks(path, canary, stable, spec))
    failures = [c for c in report.failures if c.severity == "error"]
    if failures:
        reason = "; ".join(f"{c.name}: {c.detail}" for c in failures)
        return Judgement("fail", report, reason)
    if not enough:
        return Judgement(
            "wait", report, f"{canary.requests} of {spec.min_requests} canary requests so far"
        )
    return Judgement("pass", report, "every check passed")


# -- the checks --------------------------------------------------------------------------


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how improbable ``k`` or more events are."""
    from scipy.stats import binom

    if k <= 0:
        return 1.0
    return float(binom.sf(k - 1, n, min(max(p, 0.0), 1.0)))


def _error_check(
    canary: ArmSample, stable: ArmSample | None, spec: AnalysisSpec, slo: SLOLimits
) -> CheckResult:
    limits: list[tuple[float, str]] = []
    absolute = spec.max_error_rate if spec.max_error_rate is not None else slo.error_rate
    if absolute is not None:
        limits.append((absolute, "the SLO" if spec.max_error_rate is None else "max_error_rate"))
    if stable is not None and stable.requests:
        relative = stable.error_rate * (1 + spec.max_error_increase) + spec.error_slack
        limits.append((relative, f"stable's {stable.error_rate:.4%} + tolerance"))
    if not limits:
        limits.append((spec.error_slack, "error_slack"))
    limit, source = min(limits)
    p = _binomial_tail(canary.errors, canary.requests, limit)
    failed = canary.requests > 0 and canary.error_rate > limit and p < spec.alpha
    detail = (
        f"{canary.errors} errors in {canary.requests} requests ({canary.error_rate:.2%}) "
        f"against {limit:.2%} ({source}): p = {p:.2g}"
    )
    return CheckResult(
        "error_rate", not failed, round(canary.error_rate, 6), round(limit, 6), detail
    )


def _latency_check(
    canary: ArmSample, stable: ArmSample | None, spec: AnalysisSpec, slo: SLOLimits
) -> CheckResult | None:
    limits: list[tuple[float, str]] = []
    absolute = spec.max_p95_ms if spec.max_p95_ms is not None else slo.p95_ms
    if absolute is not None:
        limits.append((absolute, "the SLO" if spec.max_p95_ms is None else "max_p95_ms"))
    if stable is not None and stable.latencies_ms.size >= 20:
        stable_p95 = float(np.quantile(stable.latencies_ms, 0.95))
        limits.append(
            (stable_p95 * (1 + spec.max_latency_increase), f"stable's p95 {stable_p95:.1f} ms")
        )
    lat = canary.latencies_ms
    if not limits or lat.size == 0:
        return None
    limit, source = min(limits)
    slower = int(np.count_nonzero(lat > limit))
    # canary p95 <= limit  <=>  at most 5 % of its requests are slower than limit
    p = _binomial_tail(slower, int(lat.size), 0.05)
    failed = slower > 0.05 * lat.size and p < spec.alpha
    observed = float(np.quantile(lat, 0.95))
    detail = (
        f"p95 {observed:.1f} ms against {limit:.1f} ms ({source}); {slower} of {lat.size} "
        f"requests slower: p = {p:.2g}"
    )
    return CheckResult("p95_latency_ms", not failed, round(observed, 3), round(limit, 3), detail)


def _drift_check(
    canary: ArmSample, stable: ArmSample | None, spec: AnalysisSpec
) -> CheckResult | None:
    if spec.max_psi is None or stable is None:
        return None
    ref, cur = stable.outputs, canary.outputs
    if ref.size < _MIN_DRIFT or cur.size < _MIN_DRIFT:  # PSI of fewer is mostly noise
        return None
    from conveyor.data.drift.stats import psi

    edges = np.unique(np.quantile(ref, np.linspace(0.1, 0.9, 9)))
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    cur_counts = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    value = psi(ref_counts.astype(np.float64), cur_counts.astype(np.float64))
    # Two samples of one distribution have a PSI of about (bins - 1)(1/n + 1/m) by chance
    # alone: 0.14 on average at 100 and 169 outputs, over 0.25 one time in ten (and far
    # over it when a bin is nearly empty). So the check fails only when the PSI is over
    # its limit and the bins' counts differ beyond chance: Pearson's chi-square test of
    # homogeneity on the same bins, well calibrated at these counts where the PSI is not.
    from scipy.stats import chi2_contingency

    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    p = float(chi2_contingency(table, correction=False).pvalue) if table.shape[1] > 1 else 1.0
    drifted = value > spec.max_psi and p < spec.alpha
    return CheckResult(
        "prediction_drift_psi",
        not drifted,
        round(value, 4),
        spec.max_psi,
        f"PSI of the canary's outputs against the stable's ({cur.size} / {ref.size} "
        f"outputs): p = {p:.2g} that chance alone gives as much",
    )


def _metric_check(
    name: str, value: float | None, stable: ArmSample | None, spec: AnalysisSpec
) -> CheckResult | None:
    base = None if stable is None else getattr(stable, name)
    if value is None or base is None:
        return None
    higher = True
    label = name
    if name == "quality" and stable is not None and stable.quality_metric:
        from conveyor.checks.metrics import metric

        higher = metric(stable.quality_metric).greater_is_better
        label = f"quality:{stable.quality_metric}"
    bound = base - spec.max_quality_drop if higher else base + spec.max_quality_drop
    ok = value >= bound if higher else value <= bound
    sign = "-" if higher else "+"
    return CheckResult(
        label,
        ok,
        round(value, 6),
        round(bound, 6),
        f"canary {value:.4f} against stable {base:.4f} {sign} {spec.max_quality_drop}",
    )


def _agreement_check(canary: ArmSample, spec: AnalysisSpec) -> CheckResult | None:
    if canary.agree is None or not canary.requests:
        return None
    answered = canary.requests - canary.errors
    share = canary.agree / answered if answered else 0.0
    return CheckResult(
        "shadow_agreement",
        share >= spec.min_agreement,
        round(share, 6),
        spec.min_agreement,
        f"{canary.agree} of {answered} shadow answers agree with the primary's",
    )


UserCheck = Callable[[ArmSample, ArmSample | None, "AnalysisSpec"], Iterable[CheckResult]]


def load_check(path: str) -> UserCheck:
    """``module:function`` -> the function (InvalidInputError when it cannot be found)."""
    import importlib

    module, _, name = path.partition(":")
    if not module or not name:
        raise InvalidInputError(
            f"check {path!r}: expected an import string 'module:function'", field="checks"
        )
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"check {path!r} cannot be loaded: {exc}", field="checks") from exc
    if not callable(found):
        raise InvalidInputError(f"check {path!r} is not callable", field="checks")
    return found  # type: ignore[no-any-return]


def _user_checks(
    path: str, canary: ArmSample, stable: ArmSample | None, spec: AnalysisSpec
) -> list[CheckResult]:
    try:
        out: Any = load_check(path)(canary, stable, spec)
        found: list[Any] = [out] if isinstance(out, CheckResult) else list(out)
    except Exception as exc:  # a user check that raises fails the step, with the reason
        return [CheckResult(f"check:{path}", False, None, None, f"raised {exc!r}")]
    bad = [c for c in found if not isinstance(c, CheckResult)]
    if bad:
        return [CheckResult(f"check:{path}", False, None, None, "did not return CheckResults")]
    return found
