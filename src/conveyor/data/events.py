"""The event kinds the data layer writes (declared in its capability, see
:mod:`conveyor.events.catalogue`).

Ingest writes ``data.extracted``, ``data.validated`` and, for rows that
failed, ``data.quarantined`` (control); a new version, every read of a
version's rows and every reveal of quarantined sensitive rows, a data subject
forgotten, a key rotation, a discarded batch and detected drift are audit.
"""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import OPTIONAL_STR

__all__ = [
    "DATA_DRIFT",
    "DATA_EVENTS",
    "DATA_EXTRACTED",
    "DATA_FORGOTTEN",
    "DATA_KEY_ROTATED",
    "DATA_QUARANTINED",
    "DATA_QUARANTINE_DISCARDED",
    "DATA_READ",
    "DATA_VALIDATED",
    "DATA_VERSION_CREATED",
    "DRIFT_DETECTED",
]

DATA_EXTRACTED = EventKind(
    "data.extracted",
    "control",
    {"rows": int, "source": dict, "run_id": OPTIONAL_STR},
    "a batch was read from a data set's source (or given) for ingest",
)
DATA_VALIDATED = EventKind(
    "data.validated",
    "control",
    {
        "report_id": str,
        "verdict": str,
        "failed": list,
        "failed_rows": int,
        "run_id": OPTIONAL_STR,
        # rows, nulls per column, range-check failures, schema change, newest row's time:
        # what data-quality monitors read (conveyor.data.layer.batch_quality)
        "quality": dict,
    },
    "an ingested batch was checked against the data set's expectations (quality: rows, "
    "nulls per column, rows out of range, schema change, newest row)",
    optional=frozenset({"quality"}),
)
DATA_QUARANTINED = EventKind(
    "data.quarantined",
    "control",
    {"batch_id": str, "rows": int, "reasons": dict, "run_id": OPTIONAL_STR},
    "rows that failed validation were set aside in a quarantine batch",
)
DATA_VERSION_CREATED = EventKind(
    "data.version_created",
    "audit",
    {
        "version_id": str,
        "rows": int,
        "batch_rows": int,
        "content_hash": str,
        "mode": str,
        "run_id": OPTIONAL_STR,
    },
    "a new version of a data set was committed (append, replace or upsert): rows in the "
    "version, and how many its batch brought",
)
DATA_READ = EventKind(
    "data.read",
    "audit",
    {
        "version_id": str,
        "quarantine_batch": str,
        "rows": int,
        "purpose": OPTIONAL_STR,
        "decrypted": list,
    },
    "rows were read: a data set version (for training, drift...), or quarantined rows "
    "revealed with their sensitive columns decrypted",
    optional=frozenset({"version_id", "quarantine_batch", "purpose", "decrypted"}),
)
DATA_FORGOTTEN = EventKind(
    "data.forgotten",
    "audit",
    {
        "column": str,
        "value_sha256": str,
        "versions_rewritten": int,
        "rows_removed": int,
        "quarantine_batches_rewritten": int,
        "quarantine_rows_removed": int,
        "events_erased": int,
        "artifacts_deleted": int,
    },
    "a data subject was removed from every version, quarantine batch and event",
)
DATA_KEY_ROTATED = EventKind(
    "data.key_rotated",
    "audit",
    {"key_id": str, "versions": int, "parts": int, "quarantine_batches": int},
    "sensitive columns were re-encrypted under the keyring's current key",
)
DATA_QUARANTINE_DISCARDED = EventKind(
    "data.quarantine_discarded",
    "audit",
    {"reason": str},
    "a quarantine batch was given up on purpose, with a reason",
)
DATA_DRIFT = EventKind(
    "data.drift",
    "control",
    {"reference": str, "current": str, "report_id": str, "verdict": str, "compared": dict},
    "two versions of a data set were compared for drift (drifted or not); compared: "
    "which rows of each (the current version's batch, or whole versions)",
    optional=frozenset({"compared"}),
)
DRIFT_DETECTED = EventKind(
    "drift.detected",
    "audit",
    {"reference": str, "current": str, "report_id": str, "drifted": list, "compared": dict},
    "a drift comparison failed (dataset drift, or an important column drifted; drifted: "
    "the failed checks): the alert retraining triggers can listen for",
    optional=frozenset({"compared"}),
)

#: Every kind the data capability declares, in its declaration's order.
DATA_EVENTS: tuple[EventKind, ...] = (
    DATA_EXTRACTED,
    DATA_VALIDATED,
    DATA_QUARANTINED,
    DATA_VERSION_CREATED,
    DATA_READ,
    DATA_FORGOTTEN,
    DATA_KEY_ROTATED,
    DATA_QUARANTINE_DISCARDED,
    DATA_DRIFT,
    DRIFT_DETECTED,
)
