"""The metadata store's own tables (runs, reports) and the ``Base`` every capability's use.

Each capability declares its tables in its own package (``conveyor/registry/tables.py``)
on this :class:`Base`, so foreign keys between them resolve, and ships its own
migration chain (:class:`conveyor.capability.Tables`); this module knows none of them.

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
    "NAMING_CONVENTION",
    "RUN_STATUSES",
    "SEVERITIES",
    "TERMINAL_STATUSES",
    "Base",
    "CheckResultRecord",
    "ReportRecord",
    "RunRecord",
    "VersionedMixin",
    "one_of",
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


def one_of(column: str, values: tuple[str, ...]) -> str:
    """A CHECK constraint's SQL: ``column`` holds one of ``values``."""
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
        sa.CheckConstraint(one_of("status", RUN_STATUSES), name="status"),
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

    __table_args__ = (sa.CheckConstraint(one_of("severity", SEVERITIES), name="severity"),)
