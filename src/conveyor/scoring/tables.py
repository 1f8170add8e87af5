"""The scoring capability's table: the partitions each batch scoring run has written.

``scoring_partitions`` has one row per (run, partition) once the partition's output is
durably in its sink (a Parquet file renamed into place, or an upsert committed). A run
resumed after a crash scores only the partitions without a row; a partition written
but not yet recorded when the process died is scored again and lands on the same file
name or the same keys, so no row is ever doubled.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base
from conveyor.store.types import utcnow

__all__ = ["ScoredPartitionRecord"]


class ScoredPartitionRecord(Base):
    """One partition of a scoring run, written: its rows, rejected rows and file digest."""

    __tablename__ = "scoring_partitions"

    run_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    partition: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(1000))
    rows: Mapped[int] = mapped_column(sa.BigInteger)
    scored: Mapped[int] = mapped_column(sa.BigInteger)
    rejected: Mapped[int] = mapped_column(sa.BigInteger)
    path: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    sha256: Mapped[str | None] = mapped_column(sa.String(71), nullable=True)
    rejected_path: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    written_at: Mapped[datetime] = mapped_column(default=utcnow)
