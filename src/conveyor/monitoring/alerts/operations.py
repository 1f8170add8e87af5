"""What the alerts' CLI commands and HTTP routes both do: an alert's detail, acknowledging
it, silences, a test notification and the sinks' health (no CLI or HTTP here, so either
imports it without the other)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conveyor.errors import InvalidInputError

__all__ = ["acknowledge", "add_silence", "alert_detail", "end_silence", "send_test", "sinks"]


def alert_detail(store: Any, alert_id: str) -> dict[str, Any]:
    incident = store.incident(alert_id)
    return {
        **incident.to_dict(),
        "deliveries": store.deliveries(alert_id),
        "reviews": store.reviews(alert_id),
    }


def acknowledge(proj: Any, alert_id: str, who: str) -> Any:
    from conveyor.monitoring.alerts.events import ALERT_ACKNOWLEDGED
    from conveyor.monitoring.alerts.store import SqlStore

    incident = SqlStore(proj.store).ack(alert_id, by=who)
    proj.events.record(
        ALERT_ACKNOWLEDGED,
        subject=incident.model,
        payload={"alert_id": incident.id, "rule": incident.rule},
        actor=who,
    )
    return incident


def add_silence(
    proj: Any, matchers: dict[str, str], ends_at: datetime, who: str, comment: str | None
) -> Any:
    from conveyor.monitoring.alerts.events import ALERT_SILENCED
    from conveyor.monitoring.alerts.store import SqlStore

    silence = SqlStore(proj.store).add_silence(matchers, ends_at=ends_at, by=who, comment=comment)
    proj.events.record(
        ALERT_SILENCED,
        payload={
            "silence_id": silence.id,
            "matchers": dict(silence.matchers),
            "starts_at": silence.starts_at.isoformat(),
            "ends_at": silence.ends_at.isoformat(),
            "comment": comment,
        },
        actor=who,
    )
    return silence


def end_silence(proj: Any, silence_id: str, who: str) -> Any:
    from conveyor.monitoring.alerts.events import ALERT_UNSILENCED
    from conveyor.monitoring.alerts.store import SqlStore

    silence = SqlStore(proj.store).expire_silence(silence_id)
    proj.events.record(ALERT_UNSILENCED, payload={"silence_id": silence.id}, actor=who)
    return silence


def send_test(proj: Any, severity: str, timeout: float) -> list[dict[str, Any]]:
    """A test notification through the real sinks; waits for them (``timeout``)."""
    from conveyor.monitoring.alerts.evaluator import Evaluator

    if severity not in ("page", "ticket", "info"):
        raise InvalidInputError(
            f"severity {severity!r}: expected page, ticket or info", field="severity"
        )
    results: list[dict[str, Any]] = []
    with Evaluator(proj) as evaluator:
        recorded = evaluator.dispatcher.on_result

        def keep(delivery: Any, status: Any) -> None:
            results.append(
                {
                    "sink": delivery.sink,
                    "ok": delivery.ok,
                    "attempts": delivery.attempts,
                    "error": delivery.error,
                    "seconds": round(delivery.seconds, 3),
                }
            )
            if recorded is not None:
                recorded(delivery, status)

        evaluator.dispatcher.on_result = keep
        evaluator.send_test(severity=severity)
        evaluator.dispatcher.drain(timeout)
    return results


def sinks(proj: Any, store: Any) -> list[dict[str, Any]]:
    """The spec's sinks with their recorded health (never used: ok)."""
    from conveyor.monitoring.alerts.rules import alerts_of

    recorded = {s["name"]: s for s in store.sinks()}
    out = []
    for spec in alerts_of(proj.spec).sinks:
        out.append(
            recorded.get(spec.name)
            or {
                "name": spec.name,
                "kind": spec.kind,
                "state": "ok",
                "delivered": 0,
                "failed": 0,
                "consecutive_failures": 0,
                "last_error": None,
                "last_ok_at": None,
                "last_failure_at": None,
            }
        )
    return out
