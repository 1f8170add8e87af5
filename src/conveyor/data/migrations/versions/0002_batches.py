"""What each version's batch was: the mode it was ingested with, its row count and hash.

Revision ID: 0002
Revises: 0001
Create Date: 2027-01-18
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Added nullable (SQLite adds columns without a table rebuild); earlier versions
    # keep NULL: their batch is unknown, and nothing reads it as a count.
    with op.batch_alter_table("dataset_versions") as batch:
        batch.add_column(sa.Column("mode", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("batch_rows", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("batch_hash", sa.String(length=80), nullable=True))
    op.create_index(
        op.f("ix_dataset_versions_dataset_batch_hash"),
        "dataset_versions",
        ["dataset", "batch_hash"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_dataset_versions_dataset_batch_hash"), table_name="dataset_versions")
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("batch_hash")
        batch.drop_column("batch_rows")
        batch.drop_column("mode")
