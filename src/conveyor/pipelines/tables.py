"""The pipelines' table: when each scheduled pipeline last fired.

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
    "ScheduleRecord",
]


class ScheduleRecord(VersionedMixin, Base):
    """When a scheduled pipeline last fired, so a restart neither skips nor repeats a slot."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    last_fired_at: Mapped[datetime | None]
    next_fire_at: Mapped[datetime | None]
    # Trigger state, e.g. the newest dataset version a data-arrival trigger has seen.
    state: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
