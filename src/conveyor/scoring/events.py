"""The event kinds batch scoring writes (declared in its capability, see
:mod:`conveyor.events.catalogue`).

Each is about the model (subject ``model:NAME``, subject version the number), carries
the scoring run's id as ``run_id`` and is audit: who scored what, with which version,
from which input, is on record once the call returns.
"""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import NUMBER, OPTIONAL_STR

__all__ = [
    "BATCH_FAILED",
    "BATCH_FINISHED",
    "BATCH_STARTED",
    "SCORING_EVENTS",
    "STREAM_STARTED",
    "STREAM_STOPPED",
]

_RUN = {"run_id": str, "model": str, "version": int, "version_id": str}

BATCH_STARTED = EventKind(
    "scoring.batch_started",
    "audit",
    {
        **_RUN,
        "input": str,
        "input_fingerprint": str,
        "output": str,
        "engine": str,
        "partitions": int,
        "pending": int,
        "resumed": bool,
        "forced": bool,
        "reason": OPTIONAL_STR,
    },
    "a batch scoring run began (or resumed): its model version, input and its "
    "fingerprint, output, engine, partitions in all and still to score",
)
BATCH_FINISHED = EventKind(
    "scoring.batch_finished",
    "audit",
    {**_RUN, "rows": int, "scored": int, "rejected": int, "partitions": int, "seconds": NUMBER},
    "a batch scoring run scored every partition: rows read, scored and rejected (with "
    "their reasons in the rejected-rows output)",
)
BATCH_FAILED = EventKind(
    "scoring.batch_failed",
    "audit",
    {**_RUN, "error": str, "done": int, "partitions": int},
    "a batch scoring run stopped before every partition was scored; `--resume RUN_ID` "
    "scores only the ones missing",
)

_STREAM = {"consumer_id": str, "model": str, "source": str, "group": str}

STREAM_STARTED = EventKind(
    "scoring.stream_started",
    "audit",
    {**_STREAM, "versions": list, "routed": bool, "output": OPTIONAL_STR, "dead_letter": str},
    "a stream scorer joined its consumer group: the model, the versions it may score "
    "with (a route's arms and shadows, or one pinned version), its source and targets",
)
STREAM_STOPPED = EventKind(
    "scoring.stream_stopped",
    "audit",
    {
        **_STREAM,
        "messages": int,
        "scored": int,
        "dead_lettered": int,
        "retried": int,
        "late": int,
        "windows": int,
        "seconds": NUMBER,
        "error": OPTIONAL_STR,
    },
    "a stream scorer left its group: messages taken, scored, sent to the dead-letter "
    "target (with their reasons there), delivered again after a sink failure, late "
    "events and windows emitted; the error that stopped it, if any",
)

SCORING_EVENTS: tuple[EventKind, ...] = (
    BATCH_STARTED,
    BATCH_FINISHED,
    BATCH_FAILED,
    STREAM_STARTED,
    STREAM_STOPPED,
)
