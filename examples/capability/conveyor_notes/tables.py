"""The capability's table, on the metadata store's Base (its own migration chain creates it)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base
from conveyor.store.types import utcnow


class NoteRecord(Base):
    __tablename__ = "notes"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(sa.String(200))
    text: Mapped[str] = mapped_column(sa.Text)
    author: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index(None, "subject", "created_at"),)
