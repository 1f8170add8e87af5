"""The experiments capability's tables.

``experiments``: one row per experiment: its arms (label -> version, weight), its design
(primary and guardrail metrics, MDE, alpha, power, the planned sample size), the route
revision it wrote, its status and its saved reports.

``feature_flags`` and ``feature_flag_history``: a flag (a named rule on a model's route:
attributes to match, a percentage, the version matching requests get) and every change
made to it, with who, when and why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base
from conveyor.store.types import JSONB_DOCUMENT, utcnow

__all__ = ["ExperimentRecord", "FlagHistoryRecord", "FlagRecord"]


class ExperimentRecord(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    model: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(20))  # running | stopped
    arms: Mapped[list[Any]] = mapped_column(JSONB_DOCUMENT)
    design: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    route_revision: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    doc: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)  # reports, last verdict
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index("ix_experiments_model_status", "model", "status"),)


class FlagRecord(Base):
    __tablename__ = "feature_flags"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(200))
    name: Mapped[str] = mapped_column(sa.String(100))
    version: Mapped[int] = mapped_column(sa.Integer)
    match: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    percent: Mapped[float] = mapped_column(sa.Float)
    state: Mapped[str] = mapped_column(sa.String(20))  # on | killed
    revision: Mapped[int] = mapped_column(sa.Integer)
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.UniqueConstraint("model", "name", name="uq_feature_flags_model_name"),)


class FlagHistoryRecord(Base):
    __tablename__ = "feature_flag_history"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(sa.String(200))
    name: Mapped[str] = mapped_column(sa.String(100))
    revision: Mapped[int] = mapped_column(sa.Integer)
    action: Mapped[str] = mapped_column(sa.String(20))
    flag: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)  # the flag after the change
    route_revision: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index("ix_feature_flag_history_flag", "model", "name", "revision"),)
