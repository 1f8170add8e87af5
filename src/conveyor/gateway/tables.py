"""The gateway's tables: the budgets' counters and the reservations held against them.

- ``llm_budget_counters``: one row per budget, subject (the key, user, team, conversation
  or model it counts for) and period (its start): what was spent and what is reserved by
  calls in flight. A reservation is one conditional UPDATE
  (``spent + reserved + amount <= limit``), so concurrent calls can never reserve past the
  limit together.
- ``llm_budget_reservations``: each call's reservation, until it settles; one left behind
  by a crashed process expires and is released by the next reservation on its counter.
- ``llm_routes``: model aliases changed at run time (``conveyor llm route set``): their
  deployments, weights and rules, which override the spec's ``gateway.models`` on every
  server (pushed on PostgreSQL, else within its poll interval); ``llm_route_history``:
  every route an alias has had, for ``conveyor llm route history`` and ``rollback``.
- ``llm_reviews``: calls a guardrail flagged, held for a human review (the conversation as
  it went upstream, the answer as checked, the decisions), and the reviewer's verdict
  (:mod:`conveyor.guardrails.review`).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base, VersionedMixin

__all__ = [
    "LlmBudgetCounterRecord",
    "LlmBudgetReservationRecord",
    "LlmReviewRecord",
    "LlmRouteHistoryRecord",
    "LlmRouteRecord",
]


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


class LlmRouteRecord(VersionedMixin, Base):
    """An alias's route kept in the store: it overrides the spec's ``gateway.models``.
    ``revision`` numbers its routes (1, 2, 3... never reused: after a delete, numbering
    goes on from the history); ``version`` is the row's, for optimistic concurrency."""

    __tablename__ = "llm_routes"

    alias: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    deployments: Mapped[list[str]] = mapped_column(sa.JSON, nullable=False)
    weights: Mapped[dict[str, float]] = mapped_column(sa.JSON, nullable=False)
    rules: Mapped[list[dict[str, object]]] = mapped_column(sa.JSON, nullable=False)
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)


class LlmRouteHistoryRecord(Base):
    """Append-only: every route an alias has had (a rollback restores the one before)."""

    __tablename__ = "llm_route_history"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    alias: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    revision: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    deployments: Mapped[list[str]] = mapped_column(sa.JSON, nullable=False)
    weights: Mapped[dict[str, float]] = mapped_column(sa.JSON, nullable=False)
    rules: Mapped[list[dict[str, object]]] = mapped_column(sa.JSON, nullable=False)
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    at: Mapped[datetime] = mapped_column(nullable=False)

    __table_args__ = (sa.UniqueConstraint("alias", "revision"),)


class LlmReviewRecord(Base):
    """A call held for review by a guardrail's ``flag``, and its verdict once given."""

    __tablename__ = "llm_reviews"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False, index=True)
    request_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True, index=True)
    model: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    deployment: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    policy: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    key: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    user: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    team: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    stream: Mapped[bool] = mapped_column(sa.Boolean, nullable=False)
    messages: Mapped[list[dict[str, object]]] = mapped_column(sa.JSON, nullable=False)
    answers: Mapped[list[str | None]] = mapped_column(sa.JSON, nullable=False)
    decisions: Mapped[list[dict[str, object]]] = mapped_column(sa.JSON, nullable=False)
    reviewer: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    rating: Mapped[str | None] = mapped_column(sa.String(8), nullable=True)
    score: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    comment: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
