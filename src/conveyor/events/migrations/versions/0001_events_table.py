"""The events table and its indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Types are spelled out rather than imported from ``conveyor.events.table``,
so this revision keeps creating what it created even when the table
module changes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("time_us", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(255)),
        sa.Column("subject_version", sa.String(255)),
        sa.Column("request_id", sa.String(255)),
        sa.Column("trace_id", sa.String(255)),
        sa.Column("actor", sa.String(255)),
        sa.Column(
            "payload", sa.Text().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
    )
    op.create_index("ux_events_id", "events", ["id"], unique=True)
    op.create_index("ix_events_kind_time", "events", ["kind", "time_us"])
    op.create_index("ix_events_subject_time", "events", ["subject", "time_us"])
    op.create_index("ix_events_time", "events", ["time_us"])
    op.create_index("ix_events_request_id", "events", ["request_id"])


def downgrade() -> None:
    op.drop_table("events")
