"""Batch scoring: the partitions each run has written.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
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
        "scoring_partitions",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("partition", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("scored", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=True),
        sa.Column("sha256", sa.String(length=71), nullable=True),
        sa.Column("rejected_path", sa.String(length=1000), nullable=True),
        sa.Column("written_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "partition", name=op.f("pk_scoring_partitions")),
    )


def downgrade() -> None:
    op.drop_table("scoring_partitions")
