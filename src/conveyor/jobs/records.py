"""A job's record as its owner reads it, and who may read it.

::

    check_reader(record, actor="key:ci", key=caller_key)    # PermissionDeniedError otherwise
    public(record)  # {"id", "status", "model", "result"|"error", "timing": {...}, ...}

Statuses: ``queued`` (accepted, no worker yet), ``running`` (a worker took
it; ``attempts`` counts deliveries), ``done`` (``result`` holds the answer the
synchronous call would have given) and ``failed`` (``error`` holds the error's
JSON, stable ``code`` included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.errors import PermissionDeniedError

if TYPE_CHECKING:
    from conveyor.governance.keys import ApiKey

__all__ = ["READ_ANY", "STATUSES", "check_reader", "public"]

STATUSES = ("queued", "running", "done", "failed")
#: The action that reads any key's jobs (admin); a job's owner reads its own with jobs.read.
READ_ANY = "jobs.read_any"
_PRIVATE = ("submitted_ts", "started_ts", "finished_ts", "headers")


def check_reader(record: dict[str, Any], actor: str, key: ApiKey | None) -> None:
    """Only the key that submitted a job, or a key whose role allows ``jobs.read_any``
    (admin), reads it. Without keys (a project that never made one) the owner and the
    reader are both the anonymous or local user."""
    if record.get("owner") == actor:
        return
    if key is not None and key.allows(READ_ANY):
        return
    raise PermissionDeniedError(
        f"job {record.get('id')} belongs to another key; only its owner or an admin reads it",
        action=READ_ANY,
    )


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its private fields, with its timing in milliseconds."""
    out = {k: v for k, v in record.items() if k not in _PRIVATE}
    submitted = record.get("submitted_ts")
    started = record.get("started_ts")
    finished = record.get("finished_ts")
    timing: dict[str, float | None] = {"queued_ms": None, "run_ms": None, "total_ms": None}
    if submitted is not None and started is not None:
        timing["queued_ms"] = round((started - submitted) * 1000, 3)
    if started is not None and finished is not None:
        timing["run_ms"] = round((finished - started) * 1000, 3)
    if submitted is not None and finished is not None:
        timing["total_ms"] = round((finished - submitted) * 1000, 3)
    out["timing"] = timing
    return out
