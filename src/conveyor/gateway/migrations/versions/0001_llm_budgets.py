"""The LLM gateway's budgets: counters per budget, subject and period, and reservations.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "llm_budget_counters",
        sa.Column("budget", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("limit_usd", sa.Float(), nullable=False),
        sa.Column("spent_usd", sa.Float(), nullable=False),
        sa.Column("reserved_usd", sa.Float(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "budget", "subject", "period_start", name=op.f("pk_llm_budget_counters")
        ),
    )
    op.create_table(
        "llm_budget_reservations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("budget", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("amount_usd", sa.Float(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", "budget", name=op.f("pk_llm_budget_reservations")),
    )
    op.create_index(
        op.f("ix_llm_budget_reservations_expires_at"),
        "llm_budget_reservations",
        ["expires_at"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_llm_budget_reservations_expires_at"), table_name="llm_budget_reservations"
    )
    op.drop_table("llm_budget_reservations")
    op.drop_table("llm_budget_counters")
