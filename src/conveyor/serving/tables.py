"""The model server's tables: each served model's live route and its history.

Declared on the metadata store's ``Base``; created and changed only by this
capability's migration chain (``migrations/``), which a test holds equal to them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base, VersionedMixin
from conveyor.store.types import JSONB_DOCUMENT, utcnow

__all__ = [
    "RouteHistoryRecord",
    "RouteRecord",
]


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
