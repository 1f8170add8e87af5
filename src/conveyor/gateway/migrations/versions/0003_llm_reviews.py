"""The LLM gateway's review queue: calls a guardrail flagged, and their verdicts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "llm_reviews",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=True),
        sa.Column("policy", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("user", sa.String(length=200), nullable=True),
        sa.Column("team", sa.String(length=200), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("decisions", sa.JSON(), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=True),
        sa.Column("reviewed_at", UTCDateTime(), nullable=True),
        sa.Column("rating", sa.String(length=8), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_reviews")),
    )
    op.create_index(op.f("ix_llm_reviews_status"), "llm_reviews", ["status"])
    op.create_index(op.f("ix_llm_reviews_created_at"), "llm_reviews", ["created_at"])
    op.create_index(op.f("ix_llm_reviews_request_id"), "llm_reviews", ["request_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_llm_reviews_request_id"), table_name="llm_reviews")
    op.drop_index(op.f("ix_llm_reviews_created_at"), table_name="llm_reviews")
    op.drop_index(op.f("ix_llm_reviews_status"), table_name="llm_reviews")
    op.drop_table("llm_reviews")
