"""The monitoring capability's tables: where the columnar copy of the event log stands,
and the files it is made of.

``monitoring_compaction`` holds one row per copied log (``events``): ``last_seq``, the
checkpoint (every event with a seq at or below it is in the files listed in
``monitoring_files``, each exactly once), and the token of the compaction run that
holds it. A run commits a batch's files and the new checkpoint in one transaction, and
only while its token is still the row's (a compare-and-set): of two runs, the later
one wins and the earlier one stops at its next commit.

The alerts' tables (:mod:`conveyor.monitoring.alerts.store`): ``alert_incidents`` (one
row per incident, its full state in ``doc``), ``alert_silences``, ``alert_sinks`` (each
sink's health as its last delivery left it), ``alert_deliveries`` and ``alert_reviews``
(review items opened by alert actions).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base
from conveyor.store.types import JSONB_DOCUMENT, utcnow

__all__ = [
    "AlertDeliveryRecord",
    "AlertIncidentRecord",
    "AlertLeaseRecord",
    "AlertReviewRecord",
    "AlertSilenceRecord",
    "AlertSinkRecord",
    "CompactedFileRecord",
    "CompactionRecord",
]


class CompactionRecord(Base):
    """Where the columnar copy of one event log stands."""

    __tablename__ = "monitoring_compaction"

    log: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    last_seq: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    events: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    files: Mapped[int] = mapped_column(sa.Integer, default=0)
    run_token: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    run_started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CompactedFileRecord(Base):
    """One Parquet file of the copy: its path under the artifact store's root, its
    partition (kind, hour), the seqs and times it holds."""

    __tablename__ = "monitoring_files"

    path: Mapped[str] = mapped_column(sa.String(400), primary_key=True)
    log: Mapped[str] = mapped_column(sa.String(63))
    kind: Mapped[str] = mapped_column(sa.String(100))
    hour_us: Mapped[int] = mapped_column(sa.BigInteger)
    first_seq: Mapped[int] = mapped_column(sa.BigInteger)
    last_seq: Mapped[int] = mapped_column(sa.BigInteger)
    rows: Mapped[int] = mapped_column(sa.Integer)
    min_time_us: Mapped[int] = mapped_column(sa.BigInteger)
    max_time_us: Mapped[int] = mapped_column(sa.BigInteger)
    bytes: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index("ix_monitoring_files_log_kind_hour_us", "log", "kind", "hour_us"),)


# -- alerts (conveyor.monitoring.alerts.store) ------------------------------------------


class AlertIncidentRecord(Base):
    __tablename__ = "alert_incidents"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(400))
    rule: Mapped[str] = mapped_column(sa.String(200))
    model: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    severity: Mapped[str] = mapped_column(sa.String(16))
    state: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    doc: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)

    __table_args__ = (
        sa.Index("ix_alert_incidents_state", "state"),
        sa.Index("ix_alert_incidents_fingerprint_resolved_at", "fingerprint", "resolved_at"),
    )


class AlertSilenceRecord(Base):
    __tablename__ = "alert_silences"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    matchers: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    starts_at: Mapped[datetime] = mapped_column()
    ends_at: Mapped[datetime] = mapped_column()
    created_by: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    comment: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index("ix_alert_silences_ends_at", "ends_at"),)


class AlertSinkRecord(Base):
    __tablename__ = "alert_sinks"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    state: Mapped[str] = mapped_column(sa.String(16))
    delivered: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    consecutive_failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    last_ok_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_failure_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertDeliveryRecord(Base):
    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    sink: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(16))
    alert_ids: Mapped[list[Any]] = mapped_column(JSONB_DOCUMENT)
    ok: Mapped[bool] = mapped_column(sa.Boolean)
    attempts: Mapped[int] = mapped_column(sa.Integer)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    seconds: Mapped[float] = mapped_column(sa.Float)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index("ix_alert_deliveries_sink_at", "sink", "at"),)


class AlertReviewRecord(Base):
    __tablename__ = "alert_reviews"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    alert_id: Mapped[str] = mapped_column(sa.String(32))
    model: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    state: Mapped[str] = mapped_column(sa.String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index("ix_alert_reviews_alert_id", "alert_id"),)


class AlertLeaseRecord(Base):
    """Who evaluates the rules: one holder at a time across workers and servers, until
    ``expires_at`` (renewed at each evaluation; taken over once it lapses)."""

    __tablename__ = "alert_lease"

    name: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(200))
    expires_at: Mapped[datetime] = mapped_column()
