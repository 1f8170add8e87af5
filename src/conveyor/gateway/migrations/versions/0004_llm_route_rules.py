"""The LLM gateway's stored routes as pointers: rules and a reason on each route, its
revision (the concurrency token of a conditional change), and the history of every
route an alias has had.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("llm_routes") as batch:
        batch.add_column(sa.Column("rules", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
    # Until now ``version`` counted an alias's changes: that is its revision.
    op.execute("UPDATE llm_routes SET revision = version")
    op.create_table(
        "llm_route_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("alias", sa.String(length=128), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("deployments", sa.JSON(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_route_history")),
        sa.UniqueConstraint("alias", "revision", name=op.f("uq_llm_route_history_alias_revision")),
    )


def downgrade() -> None:
    op.drop_table("llm_route_history")
    with op.batch_alter_table("llm_routes") as batch:
        batch.drop_column("revision")
        batch.drop_column("reason")
        batch.drop_column("rules")
