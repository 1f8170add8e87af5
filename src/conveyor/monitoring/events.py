"""The event kinds the monitoring capability writes (declared in its capability, see
:mod:`conveyor.events.catalogue`)."""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import NUMBER
from conveyor.monitoring.alerts.events import (
    ALERT_ACKNOWLEDGED,
    ALERT_ACTION,
    ALERT_DELIVERY_FAILED,
    ALERT_FIRED,
    ALERT_RESOLVED,
    ALERT_RETRAIN_REQUESTED,
    ALERT_SILENCED,
    ALERT_UNSILENCED,
)
from conveyor.monitoring.drift_live import DRIFT_CHECKED
from conveyor.monitoring.feedback import FEEDBACK, FEEDBACK_REJECTED
from conveyor.monitoring.system_events import SERVING_SAMPLE

__all__ = ["EVENTS_COMPACTED", "MONITORING_EVENTS", "SINK_REJECTED"]

EVENTS_COMPACTED = EventKind(
    "monitoring.compacted",
    "control",
    {
        "events": int,
        "files": int,
        "first_seq": int,
        "last_seq": int,
        "removed": int,
        "seconds": NUMBER,
    },
    "a compaction copied the events with a seq above first_seq and up to last_seq into the "
    "event log's Parquet copy, and removed what interrupted runs had left",
)

SINK_REJECTED = EventKind(
    "monitoring.sink_rejected",
    "control",
    {"stream": str, "seq": int, "reason": str, "bytes": int, "delivered": int},
    "the events sink (conveyor events sink) met a message on the broker's stream that is not "
    "an event; the stream keeps the message at seq, this says why it was not stored",
)

MONITORING_EVENTS: tuple[EventKind, ...] = (
    EVENTS_COMPACTED,
    SINK_REJECTED,
    DRIFT_CHECKED,
    SERVING_SAMPLE,
    FEEDBACK,  # ground truth (conveyor.monitoring.feedback)
    FEEDBACK_REJECTED,
    # alerts (conveyor.monitoring.alerts.events), each a constant here as the catalogue
    # test wants
    ALERT_FIRED,
    ALERT_RESOLVED,
    ALERT_ACKNOWLEDGED,
    ALERT_SILENCED,
    ALERT_UNSILENCED,
    ALERT_ACTION,
    ALERT_RETRAIN_REQUESTED,
    ALERT_DELIVERY_FAILED,
)
