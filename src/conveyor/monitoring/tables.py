"""The monitoring capability's tables: where the columnar copy of the event log stands,
and the files it is made of.

``monitoring_compaction`` holds one row per copied log (``events``): ``last_seq``, the
checkpoint (every event with a seq at or below it is in the files listed in
``monitoring_files``, each exactly once), and the token of the compaction run that
holds it. A run commits a batch's files and the new checkpoint in one transaction, and
only while its token is still the row's (a compare-and-set): of two runs, the later
one wins and the earlier one stops at its next commit.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base
from conveyor.store.types import utcnow

__all__ = ["CompactedFileRecord", "CompactionRecord"]


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
