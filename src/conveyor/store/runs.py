"""Runs: one training job, pipeline execution or demo, with what it used and produced.

:class:`RunRepository` is the only writer of the ``runs`` table. Each method
is one transaction and returns a frozen :class:`Run` snapshot carrying the
row's ``version``. Pass that version back as ``expected_version`` to make a
read-modify-write safe: if someone else wrote in between, the write raises
:class:`ConcurrentUpdateError` and stores nothing, and the caller re-reads
and retries. Blind merges (``log_metrics`` without a version, ``finish``)
lock the row instead, so they never fail on a concurrent writer.
"""

from __future__ import annotations

import math
import numbers
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from conveyor.errors import ConcurrentUpdateError, ConflictError, InvalidInputError, NotFoundError
from conveyor.store.database import MetadataStore, keyset, page_of
from conveyor.store.models import RUN_STATUSES, TERMINAL_STATUSES, RunRecord
from conveyor.store.paging import Page
from conveyor.store.types import aware_utc, json_value, utcnow

__all__ = ["UPDATABLE_FIELDS", "Run", "RunRepository", "RunStatus"]

RunStatus = Literal["running", "succeeded", "failed", "cancelled"]

#: What :meth:`RunRepository.update` may change; id, started_at, updated_at
#: and version are the store's to manage.
UPDATABLE_FIELDS = (
    "project",
    "kind",
    "name",
    "status",
    "params",
    "metrics",
    "tags",
    "artifacts",
    "error",
    "ended_at",
)

# Column widths, checked up front: SQLite would store a longer value that
# PostgreSQL refuses, and a project must behave the same on both.
_LIMITS = {"project": 200, "kind": 50, "name": 200, "run_id": 32}


@dataclass(frozen=True, slots=True)
class Run:
    """A snapshot of one run as stored; ``version`` is what ``expected_version`` compares."""

    id: str
    project: str | None
    kind: str
    name: str
    status: RunStatus
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, Any]
    artifacts: dict[str, dict[str, Any]]
    error: str | None
    started_at: datetime
    ended_at: datetime | None
    updated_at: datetime
    version: int

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ISO 8601 strings."""
        data = asdict(self)
        for key in ("started_at", "ended_at", "updated_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data

    @classmethod
    def _from_record(cls, rec: RunRecord) -> Run:
        return cls(
            id=rec.id,
            project=rec.project,
            kind=rec.kind,
            name=rec.name,
            status=cast(RunStatus, rec.status),
            params=dict(rec.params),
            # JSONB hands back 1e20 as the integer 10**20; float() restores it exactly.
            metrics={k: float(v) for k, v in rec.metrics.items()},
            tags=dict(rec.tags),
            artifacts={k: dict(v) for k, v in rec.artifacts.items()},
            error=rec.error,
            started_at=rec.started_at,
            ended_at=rec.ended_at,
            updated_at=rec.updated_at,
            version=rec.version,
        )


class RunRepository:
    """Create, change and list runs in one :class:`MetadataStore`; get it as ``store.runs``."""

    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"<RunRepository of {self._store!r}>"

    def start(
        self,
        kind: str,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        project: str | None = None,
    ) -> Run:
        """Record a new run in status ``running``, started now."""
        now = utcnow()
        record = RunRecord(
            id=uuid.uuid4().hex,
            project=_text(project, "project", optional=True),
            kind=_text(kind, "kind"),
            name=_text(name, "name"),
            status="running",
            params=_document(params, "params"),
            metrics={},
            tags=_document(tags, "tags"),
            artifacts={},
            error=None,
            started_at=now,
            ended_at=None,
            updated_at=now,
        )
        with self._store.session() as session:
            session.add(record)
            session.flush()
            return Run._from_record(record)

    def get(self, run_id: str) -> Run:
        """The run with this id, or NotFoundError."""
        _check_id(run_id)
        with self._store.read() as session:
            record = session.get(RunRecord, run_id)
            if record is None:
                raise _not_found(run_id)
            return Run._from_record(record)

    def update(self, run_id: str, *, expected_version: int, **changes: Any) -> Run:
        """Change fields of a run that is still at ``expected_version``.

        Raises ConcurrentUpdateError (writing nothing) if the run changed since
        that version was read. Setting a finished status stamps ``ended_at``
        unless it is given.
        """
        unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
        if unknown:
            raise InvalidInputError(
                f"cannot update run field(s) {', '.join(unknown)}; "
                f"updatable fields: {', '.join(UPDATABLE_FIELDS)}",
                field=unknown[0],
            )
        values = {name: _VALIDATORS[name](value) for name, value in changes.items()}
        with self._store.session() as session:
            record = _load(session, run_id, expected_version)
            for name, value in values.items():
                setattr(record, name, value)
            if (
                values.get("status") in TERMINAL_STATUSES
                and "ended_at" not in values
                and record.ended_at is None
            ):
                record.ended_at = utcnow()
            session.flush()
            return Run._from_record(record)

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], *, expected_version: int | None = None
    ) -> Run:
        """Merge ``metrics`` into the run's metrics (a key logged again is replaced)."""
        values = _metrics(metrics)
        with self._store.session() as session:
            record = _load(session, run_id, expected_version)
            record.metrics = {**record.metrics, **values}
            session.flush()
            return Run._from_record(record)

    def log_params(
        self, run_id: str, params: Mapping[str, Any], *, expected_version: int | None = None
    ) -> Run:
        """Merge ``params`` into the run's params (a key logged again is replaced)."""
        values = _document(params, "params")
        with self._store.session() as session:
            record = _load(session, run_id, expected_version)
            record.params = {**record.params, **values}
            session.flush()
            return Run._from_record(record)

    def add_artifact(self, run_id: str, name: str, digest: str, size: int) -> Run:
        """Record that the run produced artifact ``name`` (content ``digest``, ``size`` bytes)."""
        entry = _artifact(name, {"digest": digest, "size": size})
        with self._store.session() as session:
            record = _load(session, run_id, None)
            record.artifacts = {**record.artifacts, name: entry}
            session.flush()
            return Run._from_record(record)

    def finish(
        self, run_id: str, status: RunStatus = "succeeded", *, error: str | None = None
    ) -> Run:
        """End a running run with a final status; ConflictError if it already ended."""
        if status not in TERMINAL_STATUSES:
            raise InvalidInputError(
                f"a run finishes with status one of {', '.join(TERMINAL_STATUSES)}, not {status!r}",
                field="status",
            )
        error = _optional_str(error, "error")
        with self._store.session() as session:
            record = _load(session, run_id, None)
            if record.status in TERMINAL_STATUSES:
                raise ConflictError(
                    f"run {run_id} already finished as {record.status} at "
                    f"{record.ended_at}; a run finishes once",
                    run_id=run_id,
                    status=record.status,
                )
            record.status = status
            record.error = error
            record.ended_at = utcnow()
            session.flush()
            return Run._from_record(record)

    def list(
        self,
        *,
        kind: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Run]:
        """Runs newest first, ``limit`` at a time; pass ``next_cursor`` back for the next page."""
        stmt = sa.select(RunRecord)
        if kind is not None:
            stmt = stmt.where(RunRecord.kind == _text(kind, "kind"))
        if status is not None:
            stmt = stmt.where(RunRecord.status == _status(status))
        stmt = keyset(
            stmt, RunRecord.started_at, RunRecord.id, limit=limit, cursor=cursor, listing="runs"
        )
        with self._store.read() as session:
            runs = [Run._from_record(r) for r in session.scalars(stmt)]
        return page_of(runs, limit, lambda run: (run.started_at, run.id))


def _load(session: Session, run_id: str, expected_version: int | None) -> RunRecord:
    _check_id(run_id)
    if expected_version is None:
        # A blind merge: lock the row so a concurrent writer waits instead of
        # making this write stale (SQLite's BEGIN IMMEDIATE already serialises).
        stmt = sa.select(RunRecord).where(RunRecord.id == run_id).with_for_update()
        record = session.scalars(stmt).one_or_none()
    else:
        if not isinstance(expected_version, int) or isinstance(expected_version, bool):
            raise InvalidInputError(
                f"expected_version must be the integer version of a Run, got {expected_version!r}",
                field="expected_version",
            )
        record = session.get(RunRecord, run_id)
    if record is None:
        raise _not_found(run_id)
    if expected_version is not None and record.version != expected_version:
        raise ConcurrentUpdateError(
            f"run {run_id} is at version {record.version}, not the expected "
            f"{expected_version}: someone else changed it. Get it again, re-apply "
            "the change and retry",
            run_id=run_id,
            expected_version=expected_version,
            version=record.version,
        )
    return record


def _not_found(run_id: str) -> NotFoundError:
    return NotFoundError(f"no run with id {run_id!r}", kind="run", id=run_id)


def _check_id(run_id: Any) -> None:
    if not isinstance(run_id, str) or not run_id:
        raise InvalidInputError(f"a run id is a non-empty string, got {run_id!r}", field="run_id")


def _text(value: Any, field: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{field} must be a non-empty string, got {value!r}", field=field)
    if len(value) > _LIMITS[field]:
        raise InvalidInputError(
            f"{field} is {len(value)} characters long; at most {_LIMITS[field]} are allowed",
            field=field,
        )
    return value


def _optional_str(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a string or None, got {value!r}", field=field)
    return value


def _status(value: Any) -> str:
    if value not in RUN_STATUSES:
        raise InvalidInputError(
            f"run status must be one of {', '.join(RUN_STATUSES)}, got {value!r}", field="status"
        )
    return cast(str, value)


def _document(value: Mapping[str, Any] | None, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{field} must be a mapping of names to values, got {type(value).__name__}",
            field=field,
        )
    return cast(dict[str, Any], json_value(value, field))


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"metrics must be a mapping of names to numbers, got {type(value).__name__}",
            field="metrics",
        )
    out: dict[str, float] = {}
    for name, number in value.items():
        if not isinstance(name, str) or not name:
            raise InvalidInputError(
                f"a metric name is a non-empty string, got {name!r}", field="metrics"
            )
        if isinstance(number, bool) or not isinstance(number, numbers.Real):
            raise InvalidInputError(
                f"metric {name!r} must be a number, got {type(number).__name__} {number!r}",
                field=f"metrics.{name}",
                metric=name,
            )
        as_float = float(number)
        if not math.isfinite(as_float):
            raise InvalidInputError(
                f"metric {name!r} is {as_float!r}: only finite numbers can be logged",
                field=f"metrics.{name}",
                metric=name,
            )
        out[name] = as_float
    return out


def _artifact(name: Any, entry: Any) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise InvalidInputError(
            f"an artifact name is a non-empty string, got {name!r}", field="artifacts"
        )
    if not isinstance(entry, Mapping):
        raise InvalidInputError(
            f"artifact {name!r} must be a mapping with digest and size", field="artifacts"
        )
    digest, size = entry.get("digest"), entry.get("size")
    if not isinstance(digest, str) or not digest:
        raise InvalidInputError(
            f"artifact {name!r}: digest must be a non-empty string, got {digest!r}",
            field="digest",
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInputError(
            f"artifact {name!r}: size must be a byte count (an integer >= 0), got {size!r}",
            field="size",
        )
    extra = {k: v for k, v in entry.items() if k not in ("digest", "size")}
    return {**json_value(extra, f"artifacts.{name}"), "digest": digest, "size": int(size)}


def _artifacts(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            "artifacts must be a mapping of name -> {'digest': ..., 'size': ...}",
            field="artifacts",
        )
    return {name: _artifact(name, entry) for name, entry in value.items()}


def _ended_at(value: Any) -> datetime | None:
    return None if value is None else aware_utc(value, "ended_at")


_VALIDATORS: dict[str, Any] = {
    "project": lambda v: _text(v, "project", optional=True),
    "kind": lambda v: _text(v, "kind"),
    "name": lambda v: _text(v, "name"),
    "status": _status,
    "params": lambda v: _document(v, "params"),
    "metrics": _metrics,
    "tags": lambda v: _document(v, "tags"),
    "artifacts": _artifacts,
    "error": lambda v: _optional_str(v, "error"),
    "ended_at": _ended_at,
}
