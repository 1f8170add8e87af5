"""Runs: one training job, pipeline execution or demo, with what it used and produced.

:class:`RunRepository` is the only writer of the ``runs`` table. Each method
is one transaction and returns a frozen :class:`Run` snapshot carrying the
row's ``version``. Pass that version back as ``expected_version`` to make a
read-modify-write safe: if someone else wrote in between, the write raises
:class:`ConcurrentUpdateError` and stores nothing, and the caller re-reads
and retries. Blind merges (``log_metrics`` without a version, ``finish``)
lock the row instead, so they never fail on a concurrent writer.

A run can belong to another (``parent_id``: a pipeline run's step
attempts) and be numbered (``attempt``). A live runner calls
:meth:`RunRepository.heartbeat` while it works; :meth:`RunRepository.stale`
finds runs still "running" whose runner stopped beating (it crashed).
"""

from __future__ import annotations

import math
import numbers
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from conveyor.errors import ConcurrentUpdateError, ConflictError, InvalidInputError, NotFoundError
from conveyor.store.database import MetadataStore, page
from conveyor.store.models import RUN_STATUSES, TERMINAL_STATUSES, RunRecord
from conveyor.store.paging import Page
from conveyor.store.types import aware_utc, json_value, utcnow

__all__ = ["UPDATABLE_FIELDS", "Run", "RunRepository", "RunStatus", "clean_metrics"]

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
    #: The run this one is part of (a pipeline run, for a step attempt).
    parent_id: str | None = None
    #: When a live runner last said it was still working on this run.
    heartbeat_at: datetime | None = None
    #: 1 for a first try; a retried step or a re-run pipeline counts up.
    attempt: int = 1

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ISO 8601 strings."""
        data = asdict(self)
        for key in ("started_at", "ended_at", "updated_at", "heartbeat_at"):
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
            parent_id=rec.parent_id,
            heartbeat_at=rec.heartbeat_at,
            attempt=rec.attempt,
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
        parent_id: str | None = None,
        attempt: int = 1,
    ) -> Run:
        """Record a new run in status ``running``, started now.

        ``parent_id`` makes it part of another run (a step attempt of a
        pipeline run; NotFoundError if there is no such run); ``attempt``
        numbers tries of the same work from 1.
        """
        if parent_id is not None:
            _check_id(parent_id, "parent_id")
        attempt = _attempt(attempt)
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
            parent_id=parent_id,
            heartbeat_at=None,
            attempt=attempt,
        )
        with self._store.session() as session:
            if parent_id is not None and session.get(RunRecord, parent_id) is None:
                raise NotFoundError(
                    f"no run with id {parent_id!r} to be the parent of a new {kind!r} run",
                    kind="run",
                    id=parent_id,
                    field="parent_id",
                )
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
        values = clean_metrics(metrics)
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
        return self.add_artifacts(run_id, {name: (digest, size)})

    def add_artifacts(self, run_id: str, artifacts: Mapping[str, tuple[str, int]]) -> Run:
        """Record several artifacts, ``{name: (digest, size)}``, in one transaction."""
        entries = {
            name: _artifact(name, {"digest": digest, "size": size})
            for name, (digest, size) in artifacts.items()
        }
        with self._store.session() as session:
            record = _load(session, run_id, None)
            record.artifacts = {**record.artifacts, **entries}
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

    def heartbeat(self, run_id: str) -> Run:
        """Stamp ``heartbeat_at`` now: the runner working on this run is alive.

        Bumps the version, so a recoverer that read the run as stale and
        writes with ``expected_version`` gets ConcurrentUpdateError instead of
        failing a live run. ConflictError if the run is no longer running
        (someone declared it dead and finished it): the caller lost it.
        """
        with self._store.session() as session:
            record = _load(session, run_id, None)
            if record.status != "running":
                raise ConflictError(
                    f"run {run_id} is {record.status}, not running (ended at "
                    f"{record.ended_at}: {record.error or 'no error recorded'}); "
                    "its runner no longer owns it",
                    run_id=run_id,
                    status=record.status,
                )
            record.heartbeat_at = utcnow()
            session.flush()
            return Run._from_record(record)

    def children(self, run_id: str) -> list[Run]:
        """The runs whose parent is ``run_id``, oldest first (empty if it has none)."""
        return self.children_of([run_id]).get(run_id, [])

    def children_of(self, run_ids: Sequence[str]) -> dict[str, list[Run]]:
        """:meth:`children` of several runs in one query: parent id -> its children, oldest first.

        A parent without children has no key.
        """
        if isinstance(run_ids, str):
            raise InvalidInputError(
                "run_ids is a sequence of run ids, not one string", field="run_ids"
            )
        for run_id in run_ids:
            _check_id(run_id)
        out: dict[str, list[Run]] = {}
        if not run_ids:
            return out
        stmt = (
            sa.select(RunRecord)
            .where(RunRecord.parent_id.in_(list(dict.fromkeys(run_ids))))
            .order_by(RunRecord.started_at, RunRecord.attempt, RunRecord.id)
        )
        with self._store.read() as session:
            for record in session.scalars(stmt):
                out.setdefault(cast(str, record.parent_id), []).append(Run._from_record(record))
        return out

    def stale(self, *, older_than: timedelta, kind: str | None = None) -> list[Run]:
        """Running runs whose heartbeat (or start, if they never beat) is older than ``older_than``.

        Those were most likely left behind by a process that died; oldest first.
        """
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise InvalidInputError(
                f"older_than must be a timedelta >= 0, got {older_than!r}", field="older_than"
            )
        cutoff = utcnow() - older_than
        beat = RunRecord.heartbeat_at
        stmt = sa.select(RunRecord).where(
            RunRecord.status == "running",
            sa.or_(
                sa.and_(beat.is_not(None), beat < cutoff),
                sa.and_(beat.is_(None), RunRecord.started_at < cutoff),
            ),
        )
        if kind is not None:
            stmt = stmt.where(RunRecord.kind == _text(kind, "kind"))
        stmt = stmt.order_by(RunRecord.started_at, RunRecord.id)
        with self._store.read() as session:
            return [Run._from_record(r) for r in session.scalars(stmt)]

    def list(
        self,
        *,
        kind: str | None = None,
        status: RunStatus | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Run]:
        """Runs newest first, ``limit`` at a time; pass ``next_cursor`` back for the next page."""
        stmt = sa.select(RunRecord)
        if kind is not None:
            stmt = stmt.where(RunRecord.kind == _text(kind, "kind"))
        if name is not None:
            stmt = stmt.where(RunRecord.name == _text(name, "name"))
        if status is not None:
            stmt = stmt.where(RunRecord.status == _status(status))
        return page(
            self._store,
            stmt,
            RunRecord.started_at,
            RunRecord.id,
            Run._from_record,
            limit=limit,
            cursor=cursor,
            listing="runs",
        )


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


def _check_id(run_id: Any, field: str = "run_id") -> None:
    if not isinstance(run_id, str) or not run_id:
        raise InvalidInputError(f"a run id is a non-empty string, got {run_id!r}", field=field)


def _attempt(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"attempt must be an integer >= 1, got {value!r}", field="attempt")
    return value


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


def clean_metrics(value: Any) -> dict[str, float]:
    """``{name: finite float}`` from a mapping; InvalidInputError naming ``metrics.<name>``."""
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
    "metrics": clean_metrics,
    "tags": lambda v: _document(v, "tags"),
    "artifacts": _artifacts,
    "error": lambda v: _optional_str(v, "error"),
    "ended_at": _ended_at,
}
