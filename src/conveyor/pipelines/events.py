"""The event kinds pipeline runs write (declared in its capability, see
:mod:`conveyor.events.catalogue`).

Every one is about a pipeline (its subject), carries the pipeline run's id as
its ``trace_id`` and ``run_id`` (but ``schedule.skipped``, which is about no
run), and is audit: the runner returns from writing it once it is committed,
so a run's record survives the process that ran it.
"""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import NUMBER, OPTIONAL_STR

__all__ = [
    "PIPELINE_CRASHED",
    "PIPELINE_EVENTS",
    "PIPELINE_FINISHED",
    "PIPELINE_STARTED",
    "SCHEDULE_SKIPPED",
    "STEP_CANCELLED",
    "STEP_CRASHED",
    "STEP_FAILED",
    "STEP_RETRYING",
    "STEP_SKIPPED",
    "STEP_STARTED",
    "STEP_SUCCEEDED",
]

_RUN = {"run_id": str, "pipeline": str}
_STEP = {**_RUN, "step": str, "step_run_id": str}

PIPELINE_STARTED = EventKind(
    "pipeline.started",
    "audit",
    {**_RUN, "attempt": int, "params": dict, "tags": dict, "steps": list},
    "a pipeline run began: its params and its steps in the order they run",
)
STEP_STARTED = EventKind(
    "step.started",
    "audit",
    {**_STEP, "attempt": int, "max_attempts": int},
    "an attempt of a step began",
)
STEP_SUCCEEDED = EventKind(
    "step.succeeded",
    "audit",
    {**_STEP, "attempt": int, "duration_s": NUMBER},
    "an attempt of a step succeeded",
)
STEP_RETRYING = EventKind(
    "step.retrying",
    "audit",
    {
        **_STEP,
        "attempt": int,
        "next_attempt": int,
        "delay_s": NUMBER,
        "duration_s": NUMBER,
        "error": str,
        "timed_out": bool,
    },
    "an attempt of a step failed and the step will be tried again after a delay",
)
STEP_FAILED = EventKind(
    "step.failed",
    "audit",
    {
        **_STEP,
        "attempt": int,
        "attempts": int,
        "duration_s": NUMBER,
        "error": str,
        "error_type": str,
        "timed_out": bool,
        "retryable": bool,
    },
    "a step failed for good (its retries used up), or the runner failed while it ran",
    optional=frozenset(
        {"attempt", "attempts", "duration_s", "error_type", "timed_out", "retryable"}
    ),
)
STEP_SKIPPED = EventKind(
    "step.skipped",
    "audit",
    {**_STEP, "reason": str},
    "a step never started: a step it depends on failed, or fail_fast stopped the run",
)
STEP_CANCELLED = EventKind(
    "step.cancelled",
    "audit",
    {**_STEP, "error": str},
    "a running step was interrupted (Ctrl-C)",
)
PIPELINE_FINISHED = EventKind(
    "pipeline.finished",
    "audit",
    {
        **_RUN,
        "status": str,
        "duration_s": NUMBER,
        "error": OPTIONAL_STR,
        "steps": dict,
        "attempt": int,
    },
    "a pipeline run ended: its status, duration, error and each step's status",
)
PIPELINE_CRASHED = EventKind(
    "pipeline.crashed",
    "audit",
    {
        **_RUN,
        "attempt": int,
        "error": str,
        "last_heartbeat": str,
        "steps": list,
        "action": str,
    },
    "recovery failed a pipeline run whose process died (and says whether it re-runs it)",
)
STEP_CRASHED = EventKind(
    "step.crashed",
    "audit",
    {**_STEP, "attempt": int, "error": OPTIONAL_STR},
    "recovery failed a step run whose process died",
)
SCHEDULE_SKIPPED = EventKind(
    "schedule.skipped",
    "audit",
    {"pipeline": str, "slot": str, "reason": str},
    "the scheduler skipped a missed slot (catch_up 'none')",
)

#: Every kind the pipelines capability declares.
PIPELINE_EVENTS: tuple[EventKind, ...] = (
    PIPELINE_STARTED,
    STEP_STARTED,
    STEP_SUCCEEDED,
    STEP_RETRYING,
    STEP_FAILED,
    STEP_SKIPPED,
    STEP_CANCELLED,
    PIPELINE_FINISHED,
    PIPELINE_CRASHED,
    STEP_CRASHED,
    SCHEDULE_SKIPPED,
)
