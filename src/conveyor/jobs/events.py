"""The event kinds the async prediction queue writes (declared in its capability)."""

from __future__ import annotations

from conveyor.capability import EventKind

__all__ = ["JOBS_EVENTS", "JOB_ACCEPTED"]

JOB_ACCEPTED = EventKind(
    "job.accepted",
    "control",
    {"job_id": str, "model": str},
    "an asynchronous prediction request was accepted onto the queue",
)

JOBS_EVENTS = (JOB_ACCEPTED,)
