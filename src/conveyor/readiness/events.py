"""The event kind the readiness report writes (declared in its capability)."""

from __future__ import annotations

from conveyor.capability import EventKind

__all__ = ["READINESS_EVENTS", "READINESS_REPORTED"]

READINESS_REPORTED = EventKind(
    "readiness.reported",
    "audit",
    {
        "report_id": str,  # the saved Report (conveyor.checks.persist)
        "verdict": str,  # passed | passed with warnings | failed
        "failed": list,  # names of the failed checks
        "warnings": list,  # names of the unmeasured or warning checks
        "load_test": bool,  # whether the built-in load test ran
    },
    "a production readiness report was made and saved: its verdict and the checks that "
    "failed or could not be measured",
)

READINESS_EVENTS = (READINESS_REPORTED,)
