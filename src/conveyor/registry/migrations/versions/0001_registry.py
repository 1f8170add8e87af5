"""Registered models, versions, aliases and alias history.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
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
        "alias_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("alias", sa.String(length=100), nullable=False),
        sa.Column("from_version_id", sa.String(length=32), nullable=True),
        sa.Column("to_version_id", sa.String(length=32), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_history")),
    )
    op.create_index(
        op.f("ix_alias_history_model_alias_at_id"),
        "alias_history",
        ["model", "alias", "at", "id"],
        unique=False,
    )
    op.create_table(
        "registered_models",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_registered_models")),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("flavor", sa.String(length=50), nullable=False),
        sa.Column("artifact_digest", sa.String(length=80), nullable=False),
        sa.Column("artifact_size", sa.BigInteger(), nullable=False),
        sa.Column("signature", JSONB_DOCUMENT, nullable=True),
        sa.Column("libraries", JSONB_DOCUMENT, nullable=False),
        sa.Column("params", JSONB_DOCUMENT, nullable=False),
        sa.Column("metrics", JSONB_DOCUMENT, nullable=False),
        sa.Column("tags", JSONB_DOCUMENT, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("environment", JSONB_DOCUMENT, nullable=False),
        sa.Column("dataset_version_ids", JSONB_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('registered', 'archived')", name=op.f("ck_model_versions_status")
        ),
        sa.ForeignKeyConstraint(
            ["model"],
            ["registered_models.name"],
            name=op.f("fk_model_versions_model_registered_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["model_versions.id"],
            name=op.f("fk_model_versions_parent_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_model_versions_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("model", "number", name=op.f("uq_model_versions_model_number")),
    )
    op.create_index(
        op.f("ix_model_versions_created_at_id"),
        "model_versions",
        ["created_at", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_model_versions_model_created_at_id"),
        "model_versions",
        ["model", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_model_versions_parent_id"), "model_versions", ["parent_id"], unique=False
    )
    op.create_index(op.f("ix_model_versions_run_id"), "model_versions", ["run_id"], unique=False)
    op.create_table(
        "model_aliases",
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("alias", sa.String(length=100), nullable=False),
        sa.Column("version_id", sa.String(length=32), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model"],
            ["registered_models.name"],
            name=op.f("fk_model_aliases_model_registered_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_aliases_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model", "alias", name=op.f("pk_model_aliases")),
    )
    op.create_index(
        op.f("ix_model_aliases_version_id"), "model_aliases", ["version_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_model_aliases_version_id"), table_name="model_aliases")
    op.drop_table("model_aliases")
    op.drop_index(op.f("ix_model_versions_run_id"), table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_parent_id"), table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_model_created_at_id"), table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_created_at_id"), table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_table("registered_models")
    op.drop_index(op.f("ix_alias_history_model_alias_at_id"), table_name="alias_history")
    op.drop_table("alias_history")
