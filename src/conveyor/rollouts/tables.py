"""The rollouts capability's table: one row per rollout, its whole state.

``rollouts`` holds what the controller needs to resume after a crash: the plan (steps,
interval, analysis), the step it is on and when that step's window began, how often
the step was extended, the route revision the controller last wrote (a manual change
since is detected, not overwritten), the saved step reports, and the lease
(``lease_holder`` until ``lease_expires``, renewed each tick) so two controllers
never drive one rollout.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base
from conveyor.store.types import JSONB_DOCUMENT, utcnow

__all__ = ["RolloutRecord"]


class RolloutRecord(Base):
    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(200))
    candidate: Mapped[int] = mapped_column(sa.Integer)
    stable: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(20))
    step_index: Mapped[int] = mapped_column(sa.Integer, default=0)
    step_started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    extensions: Mapped[int] = mapped_column(sa.Integer, default=0)
    route_revision: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    plan: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    doc: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)  # reports, history, force
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    lease_holder: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index("ix_rollouts_model_status", "model", "status"),)
