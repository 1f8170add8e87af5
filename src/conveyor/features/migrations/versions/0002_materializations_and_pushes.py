"""Where each view's materialization stands (watermark, checkpoint), and the push log.

Revision ID: 0002
Revises: 0001
Create Date: 2027-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feature_materializations",
        sa.Column("view", sa.String(length=63), nullable=False),
        sa.Column("definition", sa.String(length=71), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=True),
        sa.Column("run_token", sa.String(length=32), nullable=True),
        sa.Column("run_mode", sa.String(length=16), nullable=True),
        sa.Column("run_from", sa.BigInteger(), nullable=True),
        sa.Column("checkpoint", sa.BigInteger(), nullable=True),
        sa.Column("run_chunks", sa.Integer(), nullable=False),
        sa.Column("run_rows", sa.BigInteger(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("view", name=op.f("pk_feature_materializations")),
    )
    op.create_table(
        "feature_pushes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("view", sa.String(length=63), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("artifact", sa.String(length=71), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("first_event", UTCDateTime(), nullable=False),
        sa.Column("last_event", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("pushed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_pushes")),
        sa.UniqueConstraint("view", "digest", name=op.f("uq_feature_pushes_view_digest")),
    )


def downgrade() -> None:
    op.drop_table("feature_pushes")
    op.drop_table("feature_materializations")
