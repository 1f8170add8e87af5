"""Run a candidate's gates and keep the report: what the registry calls before a promotion."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from conveyor.checks.gates import Gate, run_gates
from conveyor.checks.result import Report
from conveyor.training.events import MODEL_VALIDATED
from conveyor.training.gates.context import GateContext

if TYPE_CHECKING:
    from conveyor.events.log import EventLog
    from conveyor.store.database import MetadataStore

__all__ = ["validate_candidate"]


def validate_candidate(
    subject: str,
    gates: Iterable[Gate],
    context: GateContext,
    *,
    store: MetadataStore | None = None,
    events: EventLog | None = None,
    run_id: str | None = None,
    subject_version: str | None = None,
) -> Report:
    """Run every gate on ``context`` and return one report (kind ``gate``).

    With ``store`` the report is saved (linked to ``run_id`` when given);
    with ``events`` a ``model.validated`` event carries its verdict and failures.
    """
    report = run_gates(subject, gates, context, kind="gate", subject_version=subject_version)
    if store is not None:
        from conveyor.checks.persist import save_report

        save_report(store, report, run_id=run_id)
    if events is not None:
        events.record(
            MODEL_VALIDATED,
            subject=subject,
            subject_version=subject_version,
            payload={
                "report": report.id,
                "run": run_id,
                "verdict": report.verdict,
                "failed": [c.name for c in report.failures],
                "warnings": [c.name for c in report.warnings],
            },
        )
    return report
