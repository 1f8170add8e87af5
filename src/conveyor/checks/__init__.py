"""Checks: one result type for data expectations, gates, canaries and SLOs; one metric registry."""

from conveyor.checks.gates import Gate, floor, run_gates
from conveyor.checks.metrics import METRICS, Metric, metric
from conveyor.checks.result import CheckResult, Report, Severity, Verdict

__all__ = [
    "METRICS",
    "CheckResult",
    "Gate",
    "Metric",
    "Report",
    "Severity",
    "Verdict",
    "floor",
    "metric",
    "run_gates",
]
