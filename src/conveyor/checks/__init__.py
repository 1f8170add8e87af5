"""Checks: one result type for data expectations, gates, canaries and SLOs."""

from conveyor.checks.gates import Gate, floor, run_gates
from conveyor.checks.result import CheckResult, Report, Severity, Verdict

__all__ = ["CheckResult", "Gate", "Report", "Severity", "Verdict", "floor", "run_gates"]
