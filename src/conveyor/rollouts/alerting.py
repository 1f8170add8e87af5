"""A rolled-back rollout raises an alert through monitoring's alerts: an incident in the
alerts' store (``conveyor alerts list`` shows it), the ``alert.fired`` event, and one
notification to every sink of ``monitoring.alerts.sinks``.

The incident is one-shot (the rollback already happened: nothing is left to resolve),
so it is stored resolved at the moment it fired; the notification says ``FIRING``.
Alerting never stops a rollback: a failure here is logged, not raised.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.rollouts.controller import Rollout

__all__ = ["RULE", "notify_rolled_back"]

RULE = "rollout_rolled_back"
_log = logging.getLogger(__name__)


def notify_rolled_back(
    project: Project, rollout: Rollout, reason: str, report_id: str | None
) -> str | None:
    """Raise the alert; returns the incident id (None when alerting failed)."""
    try:
        return _notify(project, rollout, reason, report_id)
    except Exception:  # the rollback stands whatever the sinks do
        _log.exception("rollout %s: the rollback alert could not be raised", rollout.id)
        return None


def _notify(project: Project, rollout: Rollout, reason: str, report_id: str | None) -> str:
    from conveyor.monitoring.alerts.delivery import Dispatcher
    from conveyor.monitoring.alerts.engine import Incident, Notification, fingerprint
    from conveyor.monitoring.alerts.events import ALERT_FIRED
    from conveyor.monitoring.alerts.rules import alerts_of
    from conveyor.monitoring.alerts.sinks import Sink
    from conveyor.monitoring.alerts.store import SqlStore

    now = datetime.now(UTC)
    labels = {
        "model": rollout.model,
        "rollout": rollout.id,
        "candidate": str(rollout.candidate),
        "stable": str(rollout.stable),
        "reason": reason[:500],
        "report": report_id or "",
    }
    incident = Incident(
        id=uuid.uuid4().hex,
        fingerprint=fingerprint(RULE, rollout.model),
        rule=RULE,
        metric="rollout_step_failed",
        model=rollout.model,
        severity="page",
        op=">",
        threshold=0.0,
        labels=labels,
        state="resolved",
        started_at=now,
        value=1.0,
        fired_at=now,
        resolved_at=now,
        notified_at=now,
        notifications=1,
        updated_at=now,
    )
    SqlStore(project.store).save([incident], [])
    project.events.record(
        ALERT_FIRED,
        subject=rollout.model,
        payload={
            "alert_id": incident.id,
            "rule": RULE,
            "metric": incident.metric,
            "severity": incident.severity,
            "op": incident.op,
            "threshold": incident.threshold,
            "value": incident.value,
            "labels": labels,
            "suppressed": None,
        },
        actor=f"rollout:{rollout.id}",
    )
    settings = alerts_of(project.spec)
    sinks = [Sink(s) for s in settings.sinks]
    if sinks:
        dispatcher = Dispatcher(sinks, settings.delivery)
        try:
            dispatcher.submit(
                Notification("firing", f"rollout {rollout.model}", (incident,), now, project.name)
            )
            dispatcher.drain(timeout=settings.delivery.timeout_s * 2)
        finally:
            dispatcher.close()
    return incident.id
