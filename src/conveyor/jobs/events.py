"""The event kinds the async prediction queue writes (declared in its capability)."""

from __future__ import annotations

from conveyor.capability import EventKind

__all__ = ["JOBS_EVENTS", "JOB_ACCEPTED", "JOB_CALLBACK", "JOB_FINISHED"]

JOB_ACCEPTED = EventKind(
    "job.accepted",
    "control",
    {"job_id": str, "model": str},
    "an asynchronous prediction request was accepted onto the queue",
)
JOB_FINISHED = EventKind(
    "job.finished",
    "control",
    {
        "job_id": str,
        "status": str,
        "attempts": int,
        "queued_ms": float,
        "run_ms": float,
        "code": (str, type(None)),
    },
    "a worker stored a job's result (status done) or its error (failed); the prediction "
    "itself is the usual prediction event",
)
JOB_CALLBACK = EventKind(
    "job.callback",
    "control",
    {"job_id": str, "status": str, "attempts": int, "target": str},
    "a job's callback was delivered, or given up on after its retries (status gave_up)",
)

JOBS_EVENTS = (JOB_ACCEPTED, JOB_FINISHED, JOB_CALLBACK)
