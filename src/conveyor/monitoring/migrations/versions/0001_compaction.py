"""The columnar copy of the event log: its checkpoint and its files.

Revision ID: 0001
Revises:
Create Date: 2027-02-10
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
        "monitoring_compaction",
        sa.Column("log", sa.String(length=63), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("run_token", sa.String(length=32), nullable=True),
        sa.Column("run_started_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("log", name=op.f("pk_monitoring_compaction")),
    )
    op.create_table(
        "monitoring_files",
        sa.Column("path", sa.String(length=400), nullable=False),
        sa.Column("log", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("hour_us", sa.BigInteger(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("min_time_us", sa.BigInteger(), nullable=False),
        sa.Column("max_time_us", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_monitoring_files")),
    )
    op.create_index(
        "ix_monitoring_files_log_kind_hour_us", "monitoring_files", ["log", "kind", "hour_us"]
    )


def downgrade() -> None:
    op.drop_index("ix_monitoring_files_log_kind_hour_us", table_name="monitoring_files")
    op.drop_table("monitoring_files")
    op.drop_table("monitoring_compaction")
