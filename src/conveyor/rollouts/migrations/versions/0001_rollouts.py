"""Rollouts: one row per rollout (plan, step, lease).

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import JSONB_DOCUMENT, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("candidate", sa.Integer(), nullable=False),
        sa.Column("stable", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step_started_at", UTCDateTime(), nullable=True),
        sa.Column("extensions", sa.Integer(), nullable=False),
        sa.Column("route_revision", sa.Integer(), nullable=True),
        sa.Column("plan", JSONB_DOCUMENT, nullable=False),
        sa.Column("doc", JSONB_DOCUMENT, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("lease_holder", sa.String(length=200), nullable=True),
        sa.Column("lease_expires", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index("ix_rollouts_model_status", "rollouts", ["model", "status"])


def downgrade() -> None:
    op.drop_index("ix_rollouts_model_status", table_name="rollouts")
    op.drop_table("rollouts")
