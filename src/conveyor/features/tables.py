"""The feature store's table: every applied version of every definition (append-only)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base
from conveyor.store.types import utcnow


class FeatureDefinitionRecord(Base):
    """Version ``version`` of the definition ``kind``/``name`` (entity, view, on_demand,
    service): its canonical JSON and digest, who applied it and when."""

    __tablename__ = "feature_definitions"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str] = mapped_column(sa.String(63))
    version: Mapped[int] = mapped_column(sa.Integer)
    digest: Mapped[str] = mapped_column(sa.String(71))
    definition: Mapped[str] = mapped_column(sa.Text)
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.UniqueConstraint("kind", "name", "version"),)
