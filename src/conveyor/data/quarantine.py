"""Quarantine: where the rows that failed validation wait, with their reasons.

:func:`apply_policy` (from :mod:`conveyor.data.validation.policy`) decides,
by the data set's policy (``fail``, ``quarantine``, ``warn``), which rows of
a validated batch continue and which go to quarantine; nothing is dropped
silently.

:class:`QuarantineRepository` keeps quarantined rows: each batch is a
Parquet artifact (the original columns plus ``_quarantine_reason``) and a
``quarantine_batches`` record with the row count and a reason -> rows
summary, ``pending`` until it is replayed into a dataset version or
discarded with a reason. Status changes are optimistic: pass the version
you read as ``expected_version`` and a concurrent change raises
:class:`ConcurrentUpdateError`.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from conveyor.data.validation.policy import (
    BATCH_REJECTED,
    POLICIES,
    Policy,
    PolicyDecision,
    apply_policy,
)
from conveyor.data.validation.result import REASON_COLUMN, REASON_SEPARATOR
from conveyor.errors import (
    ConcurrentUpdateError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.store.retry import retry_on_conflict

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.orm import Session

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.data.tables import QuarantineBatchRecord
    from conveyor.store.database import MetadataStore
    from conveyor.store.paging import Page

__all__ = [
    "BATCH_REJECTED",
    "POLICIES",
    "Policy",
    "PolicyDecision",
    "QuarantineBatch",
    "QuarantineRepository",
    "QuarantineStatus",
    "apply_policy",
    "reason_counts",
]

QuarantineStatus = Literal["pending", "replayed", "discarded"]
_STATUSES = ("pending", "replayed", "discarded")

# The schema has no column for why a batch was given up; it rides in the
# batch's source document under this key (and is lifted out of it on read).
_DISCARD_KEY = "_discard_reason"
_DATASET_NAME_LIMIT = 200


# -- the repository ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuarantineBatch:
    """A snapshot of one quarantine batch as stored."""

    id: str
    dataset: str
    source: dict[str, Any]
    run_id: str | None
    row_count: int
    reasons: dict[str, int]
    digest: str
    """The Parquet artifact holding the rows (and ``_quarantine_reason``)."""
    encryption: dict[str, Any] | None
    status: QuarantineStatus
    replayed_version_id: str | None
    discard_reason: str | None
    created_at: datetime
    updated_at: datetime
    version: int
    """What ``expected_version`` compares with."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["updated_at"] = self.updated_at.isoformat()
        return data

    @classmethod
    def _from_record(cls, record: QuarantineBatchRecord) -> QuarantineBatch:
        source = dict(record.source)
        discard_reason = source.pop(_DISCARD_KEY, None)
        return cls(
            id=record.id,
            dataset=record.dataset,
            source=source,
            run_id=record.run_id,
            row_count=int(record.row_count),
            reasons={str(k): int(v) for k, v in record.reasons.items()},
            digest=record.digest,
            encryption=dict(record.encryption) if record.encryption is not None else None,
            status=cast(QuarantineStatus, record.status),
            replayed_version_id=record.replayed_version_id,
            discard_reason=discard_reason,
            created_at=record.created_at,
            updated_at=record.updated_at,
            version=record.version,
        )


class QuarantineRepository:
    """Quarantined rows in the artifact store, their records in the metadata store."""

    def __init__(self, store: MetadataStore, artifacts: ArtifactStore) -> None:
        self._store = store
        self._artifacts = artifacts

    def __repr__(self) -> str:
        return f"<QuarantineRepository of {self._store!r} and {self._artifacts!r}>"

    def put(
        self,
        dataset: str,
        rows: Any,
        *,
        source: Mapping[str, Any],
        run_id: str | None = None,
        encryption: Mapping[str, Any] | None = None,
    ) -> QuarantineBatch:
        """Keep ``rows`` (with ``_quarantine_reason``) as a new pending batch of ``dataset``.

        ``encryption`` records how sensitive cells of ``rows`` were already
        encrypted by the caller (``{"columns": [...], "key_id": ...}``); it is
        stored as given. The data set's record is created if it is new.
        """
        from conveyor.data.frames import to_arrow
        from conveyor.store.types import json_value

        name = _dataset_name(dataset)
        table = to_arrow(rows)
        reasons = reason_counts(table)
        source_doc = _document(source, "source")
        if _DISCARD_KEY in source_doc:
            raise InvalidInputError(
                f"source key {_DISCARD_KEY!r} is reserved for the discard reason",
                field=f"source.{_DISCARD_KEY}",
            )
        encryption_doc = None if encryption is None else _document(encryption, "encryption")
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise InvalidInputError(f"run_id must be a run's id, got {run_id!r}", field="run_id")
        digest = self._write(table)
        reasons_doc = json_value(reasons, "reasons")

        def once() -> QuarantineBatch:
            with self._store.session() as session:
                _require_run(session, run_id)
                _ensure_dataset(session, name)
                record = _new_record(
                    name, source_doc, run_id, table.num_rows, reasons_doc, digest, encryption_doc
                )
                session.add(record)
                session.flush()
                return QuarantineBatch._from_record(record)

        # A concurrent put may create the data set's record first; the retry finds it.
        return retry_on_conflict(once, what=f"quarantining a batch of {name!r}")

    def get(self, batch_id: str) -> QuarantineBatch:
        """The batch with this id, or NotFoundError."""
        from conveyor.data.tables import QuarantineBatchRecord

        _check_id(batch_id)
        with self._store.read() as session:
            record = session.get(QuarantineBatchRecord, batch_id)
            if record is None:
                raise _not_found(batch_id)
            return QuarantineBatch._from_record(record)

    def list(
        self,
        *,
        dataset: str | None = None,
        status: QuarantineStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[QuarantineBatch]:
        """Batches newest first, ``limit`` at a time; pass ``next_cursor`` back for more."""
        import sqlalchemy as sa

        from conveyor.data.tables import QuarantineBatchRecord
        from conveyor.store.database import page

        stmt = sa.select(QuarantineBatchRecord)
        if dataset is not None:
            stmt = stmt.where(QuarantineBatchRecord.dataset == _dataset_name(dataset))
        if status is not None:
            stmt = stmt.where(QuarantineBatchRecord.status == _status(status))
        return page(
            self._store,
            stmt,
            QuarantineBatchRecord.created_at,
            QuarantineBatchRecord.id,
            QuarantineBatch._from_record,
            limit=limit,
            cursor=cursor,
            listing="quarantine batches",
        )

    def rows(self, batch_id: str) -> pa.Table:
        """The batch's rows, ``_quarantine_reason`` included (sha256-verified on read)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        batch = self.get(batch_id)
        return pq.read_table(pa.BufferReader(self._artifacts.get(batch.digest)))

    def mark_replayed(
        self, batch_id: str, version_id: str | None, *, expected_version: int | None = None
    ) -> QuarantineBatch:
        """A pending batch was validated again; ``version_id`` is the version its rows
        went into (None when none of them did).
        """
        from conveyor.data.tables import DatasetVersionRecord

        def replay(session: Session, record: QuarantineBatchRecord) -> None:
            if version_id is not None:
                _check_id(version_id, "version_id")
                version = session.get(DatasetVersionRecord, version_id)
                if version is None:
                    raise NotFoundError(
                        f"no dataset version with id {version_id!r}",
                        kind="dataset_version",
                        id=version_id,
                    )
                if version.dataset != record.dataset:
                    raise InvalidInputError(
                        f"dataset version {version_id} belongs to {version.dataset!r}, not to "
                        f"{record.dataset!r} whose rows batch {record.id} holds",
                        field="version_id",
                    )
            record.status = "replayed"
            record.replayed_version_id = version_id

        return self._change(batch_id, expected_version, replay)

    def discard(
        self, batch_id: str, reason: str, *, expected_version: int | None = None
    ) -> QuarantineBatch:
        """Give up a pending batch on purpose; ``reason`` is recorded with it."""

        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInputError(
                "discarding a batch needs a reason (a non-empty string)", field="reason"
            )

        def give_up(session: Session, record: QuarantineBatchRecord) -> None:
            record.status = "discarded"
            record.source = {**record.source, _DISCARD_KEY: reason}

        return self._change(batch_id, expected_version, give_up)

    # -- internals ------------------------------------------------------------------

    def _change(
        self,
        batch_id: str,
        expected_version: int | None,
        apply: Callable[[Session, QuarantineBatchRecord], None],
    ) -> QuarantineBatch:
        from conveyor.data.tables import QuarantineBatchRecord

        _check_id(batch_id)
        if expected_version is not None and (
            not isinstance(expected_version, int) or isinstance(expected_version, bool)
        ):
            raise InvalidInputError(
                f"expected_version must be the integer version of a batch, got "
                f"{expected_version!r}",
                field="expected_version",
            )
        with self._store.session() as session:
            record = session.get(QuarantineBatchRecord, batch_id)
            if record is None:
                raise _not_found(batch_id)
            if expected_version is not None and record.version != expected_version:
                raise ConcurrentUpdateError(
                    f"quarantine batch {batch_id} is at version {record.version}, not the "
                    f"expected {expected_version}: someone else changed it ({record.status}). "
                    "Get it again and decide anew",
                    id=batch_id,
                    expected_version=expected_version,
                    version=record.version,
                )
            if record.status != "pending":
                raise ConflictError(
                    f"quarantine batch {batch_id} is already {record.status}; only a pending "
                    "batch can be replayed or discarded",
                    id=batch_id,
                    status=record.status,
                )
            apply(session, record)
            session.flush()  # a stale version raises here, inside the transaction
            return QuarantineBatch._from_record(record)

    def _write(self, table: pa.Table) -> str:
        import pyarrow.parquet as pq

        # Through a file, not memory: a rejected batch may be every row of a large extract.
        with tempfile.TemporaryDirectory(prefix="conveyor-quarantine-") as folder:
            path = Path(folder) / "rows.parquet"
            pq.write_table(table, path, compression="zstd")
            return self._artifacts.put(path, media_type="application/vnd.apache.parquet").digest


def reason_counts(table: pa.Table) -> dict[str, int]:
    """Reason -> rows, counted in Arrow; every row must carry at least one reason."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if REASON_COLUMN not in table.column_names:
        raise InvalidInputError(
            f"quarantined rows carry their reasons in a {REASON_COLUMN!r} column; this table "
            f"has {', '.join(table.column_names) or 'no columns'}",
            field=REASON_COLUMN,
        )
    if table.num_rows == 0:
        raise InvalidInputError("there are no rows to quarantine", field="rows")
    column = table.column(REASON_COLUMN)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise InvalidInputError(
            f"{REASON_COLUMN} must hold strings, not {column.type}", field=REASON_COLUMN
        )
    blank = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_trim_whitespace(column), ""))
    missing = pc.sum(pc.cast(pc.fill_null(blank, True), pa.int64())).as_py() or 0
    if missing:
        raise InvalidInputError(
            f"{missing:,} of {table.num_rows:,} rows have no {REASON_COLUMN}: every "
            "quarantined row says why it is there",
            field=REASON_COLUMN,
        )
    names = pc.list_flatten(pc.split_pattern(column, REASON_SEPARATOR))
    counted = pc.value_counts(names)
    return {
        str(value): int(count)
        for value, count in zip(
            counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
        )
    }


def _new_record(
    dataset: str,
    source: dict[str, Any],
    run_id: str | None,
    rows: int,
    reasons: dict[str, Any],
    digest: str,
    encryption: dict[str, Any] | None,
) -> QuarantineBatchRecord:
    from conveyor.data.tables import QuarantineBatchRecord
    from conveyor.store.types import utcnow

    now = utcnow()
    return QuarantineBatchRecord(
        id=uuid.uuid4().hex,
        dataset=dataset,
        source=source,
        run_id=run_id,
        row_count=rows,
        reasons=reasons,
        digest=digest,
        encryption=encryption,
        status="pending",
        replayed_version_id=None,
        created_at=now,
        updated_at=now,
    )


def _require_run(session: Session, run_id: str | None) -> None:
    if run_id is None:
        return
    from conveyor.store.models import RunRecord

    if session.get(RunRecord, run_id) is None:
        raise NotFoundError(
            f"no run with id {run_id!r} to link the quarantine batch to", kind="run", id=run_id
        )


def _ensure_dataset(session: Session, name: str) -> None:
    from conveyor.data.tables import DatasetRecord

    if session.get(DatasetRecord, name) is None:
        session.add(DatasetRecord(name=name, latest_number=0))
        session.flush()


def _dataset_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(
            f"a data set name is a non-empty string, got {value!r}", field="dataset"
        )
    if len(value) > _DATASET_NAME_LIMIT:
        raise InvalidInputError(
            f"data set name is {len(value)} characters long; at most {_DATASET_NAME_LIMIT} "
            "are allowed",
            field="dataset",
        )
    return value


def _document(value: Any, field: str) -> dict[str, Any]:
    from conveyor.store.types import json_value

    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{field} must be a mapping, got {type(value).__name__}", field=field
        )
    return cast(dict[str, Any], json_value(value, field))


def _status(value: Any) -> str:
    if value not in _STATUSES:
        raise InvalidInputError(
            f"quarantine status must be one of {', '.join(_STATUSES)}, got {value!r}",
            field="status",
        )
    return cast(str, value)


def _check_id(value: Any, field: str = "batch_id") -> None:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{field} must be a non-empty string, got {value!r}", field=field)


def _not_found(batch_id: str) -> NotFoundError:
    return NotFoundError(
        f"no quarantine batch with id {batch_id!r}", kind="quarantine_batch", id=batch_id
    )
