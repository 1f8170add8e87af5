"""The gateway's tables: the budgets' counters and the reservations held against them.

- ``llm_budget_counters``: one row per budget, subject (the key, user, team, conversation
  or model it counts for) and period (its start): what was spent and what is reserved by
  calls in flight. A reservation is one conditional UPDATE
  (``spent + reserved + amount <= limit``), so concurrent calls can never reserve past the
  limit together.
- ``llm_budget_reservations``: each call's reservation, until it settles; one left behind
  by a crashed process expires and is released by the next reservation on its counter.
- ``llm_routes``: model aliases changed at run time (``conveyor llm route set``): they
  override the spec's ``gateway.models`` on every server within its poll interval.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base

__all__ = ["LlmBudgetCounterRecord", "LlmBudgetReservationRecord", "LlmRouteRecord"]


class LlmBudgetCounterRecord(Base):
    """Spent and reserved USD of one budget, for one subject, in one period."""

    __tablename__ = "llm_budget_counters"

    budget: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    subject: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    limit_usd: Mapped[float] = mapped_column(sa.Float, nullable=False)
    spent_usd: Mapped[float] = mapped_column(sa.Float, nullable=False, default=0.0)
    reserved_usd: Mapped[float] = mapped_column(sa.Float, nullable=False, default=0.0)
    calls: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)


class LlmBudgetReservationRecord(Base):
    """One call's reservation on one counter, until the call settles (or it expires)."""

    __tablename__ = "llm_budget_reservations"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    budget: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    subject: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    period_start: Mapped[datetime] = mapped_column(nullable=False)
    amount_usd: Mapped[float] = mapped_column(sa.Float, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False, index=True)


class LlmRouteRecord(Base):
    """An alias's route kept in the store: it overrides the spec's ``gateway.models``."""

    __tablename__ = "llm_routes"

    alias: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    deployments: Mapped[list[str]] = mapped_column(sa.JSON, nullable=False)
    weights: Mapped[dict[str, float]] = mapped_column(sa.JSON, nullable=False)
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)
