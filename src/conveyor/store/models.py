"""The metadata store's tables, as SQLAlchemy 2 declarative models.

The ORM classes are the storage shape only; callers get frozen snapshots
(:class:`conveyor.store.runs.Run`, :class:`conveyor.checks.result.Report`)
so no session state leaks out of a repository.

Migrations are written against these models, and a test proves that the
migrated schema and the models agree on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship

from conveyor.store.types import JSONB_DOCUMENT, ExactJSON, UTCDateTime, utcnow

__all__ = [
    "LINEAGE_ROLES",
    "MODEL_VERSION_STATUSES",
    "NAMING_CONVENTION",
    "QUARANTINE_STATUSES",
    "RUN_STATUSES",
    "SEVERITIES",
    "TERMINAL_STATUSES",
    "AliasHistoryRecord",
    "Base",
    "CheckResultRecord",
    "DatasetRecord",
    "DatasetVersionRecord",
    "LineageRecord",
    "ModelAliasRecord",
    "ModelVersionRecord",
    "QuarantineBatchRecord",
    "RegisteredModelRecord",
    "ReportRecord",
    "RunRecord",
    "ScheduleRecord",
    "VersionedMixin",
    "WatermarkRecord",
]

# Named constraints make migrations identical on both backends and let a
# later migration drop or alter a constraint by name (SQLite batch mode
# needs the name to find it).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
SEVERITIES = ("error", "warning")
LINEAGE_ROLES = ("input", "output")
QUARANTINE_STATUSES = ("pending", "replayed", "discarded")
MODEL_VERSION_STATUSES = ("registered", "archived")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class VersionedMixin:
    """Optimistic concurrency for a mutable row.

    Every UPDATE matches the version it read and bumps it; when another
    writer got there first, the UPDATE matches no row and SQLAlchemy raises
    ``StaleDataError``, which the store turns into ``ConcurrentUpdateError``.
    """

    version: Mapped[int] = mapped_column(sa.Integer, nullable=False)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.version}


class RunRecord(VersionedMixin, Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    project: Mapped[str | None] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(50))
    name: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(20))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    metrics: Mapped[dict[str, float]] = mapped_column(JSONB_DOCUMENT)
    tags: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # A pipeline run's steps are runs too, pointing at it.
    parent_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE")
    )
    # Refreshed by a live runner; a "running" run whose heartbeat is stale was
    # left behind by a crash and is retried or failed, never left hanging.
    heartbeat_at: Mapped[datetime | None]
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")

    __table_args__ = (
        sa.CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        sa.Index(None, "kind", "started_at"),
        # The unfiltered listing (newest first) walks this index.
        sa.Index(None, "started_at", "id"),
        sa.Index(None, "parent_id"),
        sa.Index(None, "status", "heartbeat_at"),
    )


class ReportRecord(Base):
    """A saved :class:`~conveyor.checks.result.Report`; immutable once written."""

    __tablename__ = "reports"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(50))
    subject: Mapped[str] = mapped_column(sa.String(300))
    subject_version: Mapped[str | None] = mapped_column(sa.String(100))
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    verdict: Mapped[str] = mapped_column(sa.String(30))
    created_at: Mapped[datetime]
    run_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("runs.id", ondelete="SET NULL")
    )

    checks: Mapped[list[CheckResultRecord]] = relationship(
        order_by="CheckResultRecord.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
    )

    __table_args__ = (
        sa.Index(None, "subject", "created_at"),
        sa.Index(None, "kind", "created_at"),
        sa.Index(None, "created_at", "id"),
        # PostgreSQL does not index a foreign key by itself; SET NULL on a
        # run's deletion and "reports of this run" would scan the table.
        sa.Index(None, "run_id"),
    )


class CheckResultRecord(Base):
    __tablename__ = "check_results"

    report_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(300))
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    severity: Mapped[str] = mapped_column(sa.String(10))
    observed: Mapped[Any] = mapped_column(ExactJSON(), nullable=True)
    threshold: Mapped[Any] = mapped_column(ExactJSON(), nullable=True)
    detail: Mapped[str] = mapped_column(sa.Text)

    __table_args__ = (sa.CheckConstraint(_in("severity", SEVERITIES), name="severity"),)


class DatasetRecord(VersionedMixin, Base):
    """A named data set; its versions are numbered 1, 2, 3... from ``latest_number``."""

    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    latest_number: Mapped[int] = mapped_column(sa.Integer, default=0)
    # Schema of the last accepted version ({"columns": [{"name", "type", "nullable"}]}):
    # what schema-change detection compares a new batch with.
    accepted_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONB_DOCUMENT)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DatasetVersionRecord(VersionedMixin, Base):
    """One immutable version of a data set: a Parquet snapshot plus what is known of it.

    Mutable only through deletion (GDPR): a rewrite replaces the snapshot,
    hash and row count and stamps ``rewritten_at``.
    """

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    dataset: Mapped[str] = mapped_column(
        sa.String(200), sa.ForeignKey("datasets.name", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(sa.Integer)
    content_hash: Mapped[str] = mapped_column(sa.String(80))
    row_count: Mapped[int] = mapped_column(sa.BigInteger)
    schema: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    source: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSONB_DOCUMENT)
    snapshot_digest: Mapped[str] = mapped_column(sa.String(80))
    snapshot_size: Mapped[int] = mapped_column(sa.BigInteger)
    # {"columns": [...], "key_id": "..."} when sensitive columns are encrypted.
    encryption: Mapped[dict[str, Any] | None] = mapped_column(JSONB_DOCUMENT)
    run_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("runs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rewritten_at: Mapped[datetime | None]

    __table_args__ = (
        sa.UniqueConstraint("dataset", "number"),
        sa.Index(None, "dataset", "created_at"),
        sa.Index(None, "content_hash"),
        sa.Index(None, "run_id"),
    )


class LineageRecord(Base):
    """Which dataset versions a run (a pipeline step, a training run) read and wrote."""

    __tablename__ = "lineage"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    run_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"))
    dataset_version_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("dataset_versions.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(sa.String(10))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        sa.CheckConstraint(_in("role", LINEAGE_ROLES), name="role"),
        sa.UniqueConstraint("run_id", "dataset_version_id", "role"),
        sa.Index(None, "dataset_version_id"),
    )


class QuarantineBatchRecord(VersionedMixin, Base):
    """Rows of one ingested batch that failed validation, kept with their reasons.

    The rows themselves are a Parquet artifact (``digest``) holding the
    original columns plus ``_quarantine_reason``.
    """

    __tablename__ = "quarantine_batches"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    dataset: Mapped[str] = mapped_column(
        sa.String(200), sa.ForeignKey("datasets.name", ondelete="CASCADE")
    )
    source: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    run_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("runs.id", ondelete="SET NULL")
    )
    row_count: Mapped[int] = mapped_column(sa.BigInteger)
    reasons: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    digest: Mapped[str] = mapped_column(sa.String(80))
    encryption: Mapped[dict[str, Any] | None] = mapped_column(JSONB_DOCUMENT)
    status: Mapped[str] = mapped_column(sa.String(20), default="pending")
    replayed_version_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("dataset_versions.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        sa.CheckConstraint(_in("status", QUARANTINE_STATUSES), name="status"),
        sa.Index(None, "dataset", "created_at"),
        sa.Index(None, "status", "created_at"),
    )


class WatermarkRecord(VersionedMixin, Base):
    """The high-water mark of an incremental source: extract only rows past it."""

    __tablename__ = "watermarks"

    source: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    column: Mapped[str] = mapped_column(sa.String(200))
    value: Mapped[Any] = mapped_column(ExactJSON(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ScheduleRecord(VersionedMixin, Base):
    """When a scheduled pipeline last fired, so a restart neither skips nor repeats a slot."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    last_fired_at: Mapped[datetime | None]
    next_fire_at: Mapped[datetime | None]
    # Trigger state, e.g. the newest dataset version a data-arrival trigger has seen.
    state: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RegisteredModelRecord(VersionedMixin, Base):
    """A named model; its versions are numbered 1, 2, 3... from ``latest_version``."""

    __tablename__ = "registered_models"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    description: Mapped[str | None] = mapped_column(sa.Text)
    latest_version: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelVersionRecord(Base):
    """One immutable version of a model: its artifact, signature and lineage.

    Only ``status`` ever changes (archiving), so the row carries no version column.
    """

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    model: Mapped[str] = mapped_column(
        sa.String(200), sa.ForeignKey("registered_models.name", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(sa.Integer)
    flavor: Mapped[str] = mapped_column(sa.String(50))
    artifact_digest: Mapped[str] = mapped_column(sa.String(80))
    artifact_size: Mapped[int] = mapped_column(sa.BigInteger)
    # {"inputs": [{"name", "type", "nullable"}]}; None when registered without training data.
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSONB_DOCUMENT)
    # Library name -> version at save time, compared at load.
    libraries: Mapped[dict[str, str]] = mapped_column(JSONB_DOCUMENT)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    metrics: Mapped[dict[str, float]] = mapped_column(JSONB_DOCUMENT)
    tags: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    run_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("runs.id", ondelete="SET NULL")
    )
    parent_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    git_commit: Mapped[str | None] = mapped_column(sa.String(64))
    git_dirty: Mapped[bool | None] = mapped_column(sa.Boolean)
    environment: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    dataset_version_ids: Mapped[list[str]] = mapped_column(JSONB_DOCUMENT)
    status: Mapped[str] = mapped_column(sa.String(20), default="registered")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        sa.CheckConstraint(_in("status", MODEL_VERSION_STATUSES), name="status"),
        sa.UniqueConstraint("model", "number"),
        # Newest-first keyset listings, across all models and within one.
        sa.Index(None, "created_at", "id"),
        sa.Index(None, "model", "created_at", "id"),
        sa.Index(None, "run_id"),
        sa.Index(None, "parent_id"),
    )


class ModelAliasRecord(VersionedMixin, Base):
    """A movable name (``champion``, ``challenger``...) pointing at one version of a model."""

    __tablename__ = "model_aliases"

    model: Mapped[str] = mapped_column(
        sa.String(200),
        sa.ForeignKey("registered_models.name", ondelete="CASCADE"),
        primary_key=True,
    )
    alias: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    version_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("model_versions.id", ondelete="CASCADE")
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (sa.Index(None, "version_id"),)


class AliasHistoryRecord(Base):
    """Append-only: every move of an alias, by whom, when and why.

    Version ids are plain strings, not foreign keys, so the history outlives
    what it mentions.
    """

    __tablename__ = "alias_history"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    model: Mapped[str] = mapped_column(sa.String(200))
    alias: Mapped[str] = mapped_column(sa.String(100))
    from_version_id: Mapped[str | None] = mapped_column(sa.String(32))
    to_version_id: Mapped[str | None] = mapped_column(sa.String(32))
    actor: Mapped[str | None] = mapped_column(sa.String(200))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    forced: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index(None, "model", "alias", "at", "id"),)


API_KEY_ROLES = ("viewer", "predictor", "deployer", "admin")


class ApiKeyRecord(Base):
    """An API key, stored as the sha256 of its secret (the secret is shown once).

    Keys are 256-bit random tokens, so an unsalted fast hash is enough: there
    is nothing to brute-force, and a lookup by hash stays one index probe.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    # The first characters of the token, safe to show ("cvy_3f9a1c").
    prefix: Mapped[str] = mapped_column(sa.String(16))
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    role: Mapped[str] = mapped_column(sa.String(20))
    # Token bucket: sustained requests per second and burst size; None = unlimited.
    rate_per_second: Mapped[float | None] = mapped_column(sa.Float)
    burst: Mapped[int | None] = mapped_column(sa.Integer)
    created_by: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (sa.CheckConstraint(_in("role", API_KEY_ROLES), name="role"),)


class RouteRecord(VersionedMixin, Base):
    """The live traffic policy of one served model; servers poll ``revision``."""

    __tablename__ = "routes"

    model: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    revision: Mapped[int] = mapped_column(sa.Integer)
    policy: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    actor: Mapped[str | None] = mapped_column(sa.String(200))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RouteHistoryRecord(Base):
    """Append-only: every policy a route has had, so a rollback restores the previous one."""

    __tablename__ = "route_history"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    model: Mapped[str] = mapped_column(sa.String(200))
    revision: Mapped[int] = mapped_column(sa.Integer)
    policy: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    actor: Mapped[str | None] = mapped_column(sa.String(200))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.UniqueConstraint("model", "revision"),)
