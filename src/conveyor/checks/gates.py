"""The gate runner: run named checks against a subject and collect one Report.

A gate is any callable taking a context (whatever the caller passes: a model
and its hold-out set, a data batch, canary metrics) and returning one
:class:`CheckResult` or several. A gate that raises does not crash the run
and is not lost: it becomes a failed check whose detail names the exception,
so a report always says what was decided and why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from conveyor.checks.result import CheckResult, Report, Severity

__all__ = ["Gate", "floor", "run_gates"]

Gate: TypeAlias = Callable[[Any], "CheckResult | Iterable[CheckResult]"]


def run_gates(
    subject: str,
    gates: Iterable[Gate],
    context: Any = None,
    *,
    kind: str = "gate",
    subject_version: str | None = None,
) -> Report:
    """Run every gate (none is skipped when an earlier one fails) and report."""
    report = Report(subject=subject, kind=kind, subject_version=subject_version)
    for gate in gates:
        name = getattr(gate, "__name__", type(gate).__name__)
        try:
            outcome = gate(context)
            results = [outcome] if isinstance(outcome, CheckResult) else list(outcome)
        except Exception as exc:  # a broken gate is a failed gate, with its reason kept
            results = [
                CheckResult(
                    name=name,
                    passed=False,
                    detail=f"the gate raised {type(exc).__name__}: {exc}",
                )
            ]
        report.add(*results)
    return report


def floor(
    name: str,
    observed: float,
    threshold: float,
    *,
    direction: str = "maximize",
    severity: Severity = "error",
    unit: str = "",
) -> CheckResult:
    """A value held to a floor (``maximize``) or a ceiling (``minimize``)."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    passed = observed >= threshold if direction == "maximize" else observed <= threshold
    op = ">=" if direction == "maximize" else "<="
    verdict = "meets" if passed else "misses"
    return CheckResult(
        name=name,
        passed=bool(passed),
        observed=observed,
        threshold=threshold,
        detail=f"{observed:.4g}{unit} {verdict} the required {op} {threshold:.4g}{unit}",
        severity=severity,
    )
