"""The event kinds alerts write. Every one carries the alert's id (``alert_id``), so a
retraining started by ``alert.fired`` or an ``alert.action`` is linked to its alert.
``subject`` is the alert's model (None for a rule over all traffic)."""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import NUMBER, OPTIONAL_NUMBER, OPTIONAL_STR

__all__ = [
    "ALERT_ACKNOWLEDGED",
    "ALERT_ACTION",
    "ALERT_DELIVERY_FAILED",
    "ALERT_EVENTS",
    "ALERT_FIRED",
    "ALERT_RESOLVED",
    "ALERT_RETRAIN_REQUESTED",
    "ALERT_SILENCED",
    "ALERT_UNSILENCED",
]

ALERT_FIRED = EventKind(
    "alert.fired",
    "control",
    {
        "alert_id": str,
        "rule": str,
        "metric": str,
        "severity": str,
        "op": str,
        "threshold": NUMBER,
        "value": OPTIONAL_NUMBER,
        "labels": dict,
        "suppressed": OPTIONAL_STR,
    },
    "an alert's condition held for its rule's for duration: an incident began firing "
    "(suppressed: silenced, inhibited or cooldown, when it is not notified); "
    "retrain.on_events can listen for it",
)
ALERT_RESOLVED = EventKind(
    "alert.resolved",
    "control",
    {
        "alert_id": str,
        "rule": str,
        "metric": str,
        "severity": str,
        "value": OPTIONAL_NUMBER,
        "count": int,
        "flaps": int,
        "firing_s": NUMBER,
        "notified": bool,
    },
    "a firing alert's condition stayed clear for resolve_after: its incident is over "
    "(count: breached evaluations; flaps: clear spells folded into it)",
)
ALERT_ACKNOWLEDGED = EventKind(
    "alert.acknowledged",
    "audit",
    {"alert_id": str, "rule": str},
    "someone acknowledged a firing alert: it is no longer notified again",
)
ALERT_SILENCED = EventKind(
    "alert.silenced",
    "audit",
    {
        "silence_id": str,
        "matchers": dict,
        "starts_at": str,
        "ends_at": str,
        "comment": OPTIONAL_STR,
    },
    "a silence was added: alerts whose labels match are not notified until ends_at",
)
ALERT_UNSILENCED = EventKind(
    "alert.unsilenced",
    "audit",
    {"silence_id": str},
    "a silence was ended before its expiry",
)
ALERT_ACTION = EventKind(
    "alert.action",
    "audit",
    {
        "alert_id": str,
        "rule": str,
        "action": str,
        "ok": bool,
        "detail": dict,
        "error": OPTIONAL_STR,
    },
    "a firing alert acted: retrain (alert.retrain_requested written), rollback (the "
    "model's route rolled back) or review (a review item opened); detail says what was done",
)
ALERT_RETRAIN_REQUESTED = EventKind(
    "alert.retrain_requested",
    "control",
    {"alert_id": str, "rule": str, "metric": str, "note": OPTIONAL_STR},
    "a firing alert's retrain action asks for its model's retraining (subject: the model): "
    "list it in the model's retrain.on_events",
)
ALERT_DELIVERY_FAILED = EventKind(
    "alert.delivery_failed",
    "control",
    {
        "sink": str,
        "kind": str,
        "alert_ids": list,
        "attempts": int,
        "error": str,
    },
    "a notification could not be delivered to a sink after its retries (or the sink's "
    "circuit breaker was open): the sink is failing",
)

ALERT_EVENTS: tuple[EventKind, ...] = (
    ALERT_FIRED,
    ALERT_RESOLVED,
    ALERT_ACKNOWLEDGED,
    ALERT_SILENCED,
    ALERT_UNSILENCED,
    ALERT_ACTION,
    ALERT_RETRAIN_REQUESTED,
    ALERT_DELIVERY_FAILED,
)
