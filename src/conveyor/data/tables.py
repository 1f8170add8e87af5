"""The data layer's tables: data sets and their versions, lineage, quarantine, watermarks.

Declared on the metadata store's ``Base``; created and changed only by this
capability's migration chain (``migrations/``), which a test holds equal to them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base, VersionedMixin, one_of
from conveyor.store.types import JSONB_DOCUMENT, ExactJSON, utcnow

__all__ = [
    "LINEAGE_ROLES",
    "QUARANTINE_STATUSES",
    "DatasetRecord",
    "DatasetVersionRecord",
    "LineageRecord",
    "QuarantineBatchRecord",
    "WatermarkRecord",
]

LINEAGE_ROLES = ("input", "output")
QUARANTINE_STATUSES = ("pending", "replayed", "discarded")


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
    # How the batch made this version (append, replace, upsert), how many of its rows
    # it added (the snapshot's last part), and the hash of the batch as it came in,
    # so the same batch ingested twice is caught. NULL for versions made before 0002.
    mode: Mapped[str | None] = mapped_column(sa.String(10))
    batch_rows: Mapped[int | None] = mapped_column(sa.BigInteger)
    batch_hash: Mapped[str | None] = mapped_column(sa.String(80))

    __table_args__ = (
        sa.UniqueConstraint("dataset", "number"),
        sa.Index(None, "dataset", "batch_hash"),
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
        sa.CheckConstraint(one_of("role", LINEAGE_ROLES), name="role"),
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
        sa.CheckConstraint(one_of("status", QUARANTINE_STATUSES), name="status"),
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
