"""Data sets, their versions, lineage, quarantine and watermarks.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import JSONB_DOCUMENT, ExactJSON, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("latest_number", sa.Integer(), nullable=False),
        sa.Column("accepted_schema", JSONB_DOCUMENT, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_datasets")),
    )
    op.create_table(
        "watermarks",
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("column", sa.String(length=200), nullable=False),
        sa.Column("value", ExactJSON(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_watermarks")),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("schema", JSONB_DOCUMENT, nullable=False),
        sa.Column("source", JSONB_DOCUMENT, nullable=False),
        sa.Column("profile", JSONB_DOCUMENT, nullable=True),
        sa.Column("snapshot_digest", sa.String(length=80), nullable=False),
        sa.Column("snapshot_size", sa.BigInteger(), nullable=False),
        sa.Column("encryption", JSONB_DOCUMENT, nullable=True),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("rewritten_at", UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset"],
            ["datasets.name"],
            name=op.f("fk_dataset_versions_dataset_datasets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_dataset_versions_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
        sa.UniqueConstraint("dataset", "number", name=op.f("uq_dataset_versions_dataset_number")),
    )
    op.create_index(
        op.f("ix_dataset_versions_content_hash"), "dataset_versions", ["content_hash"], unique=False
    )
    op.create_index(
        op.f("ix_dataset_versions_dataset_created_at"),
        "dataset_versions",
        ["dataset", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_dataset_versions_run_id"), "dataset_versions", ["run_id"], unique=False
    )
    op.create_table(
        "lineage",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("dataset_version_id", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("role IN ('input', 'output')", name=op.f("ck_lineage_role")),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_lineage_dataset_version_id_dataset_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_lineage_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lineage")),
        sa.UniqueConstraint(
            "run_id",
            "dataset_version_id",
            "role",
            name=op.f("uq_lineage_run_id_dataset_version_id_role"),
        ),
    )
    op.create_index(
        op.f("ix_lineage_dataset_version_id"), "lineage", ["dataset_version_id"], unique=False
    )
    op.create_table(
        "quarantine_batches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("source", JSONB_DOCUMENT, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("reasons", JSONB_DOCUMENT, nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("encryption", JSONB_DOCUMENT, nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("replayed_version_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'replayed', 'discarded')",
            name=op.f("ck_quarantine_batches_status"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset"],
            ["datasets.name"],
            name=op.f("fk_quarantine_batches_dataset_datasets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["replayed_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_quarantine_batches_replayed_version_id_dataset_versions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_quarantine_batches_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine_batches")),
    )
    op.create_index(
        op.f("ix_quarantine_batches_dataset_created_at"),
        "quarantine_batches",
        ["dataset", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_quarantine_batches_status_created_at"),
        "quarantine_batches",
        ["status", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_quarantine_batches_status_created_at"), table_name="quarantine_batches")
    op.drop_index(op.f("ix_quarantine_batches_dataset_created_at"), table_name="quarantine_batches")
    op.drop_table("quarantine_batches")
    op.drop_index(op.f("ix_lineage_dataset_version_id"), table_name="lineage")
    op.drop_table("lineage")
    op.drop_index(op.f("ix_dataset_versions_run_id"), table_name="dataset_versions")
    op.drop_index(op.f("ix_dataset_versions_dataset_created_at"), table_name="dataset_versions")
    op.drop_index(op.f("ix_dataset_versions_content_hash"), table_name="dataset_versions")
    op.drop_table("dataset_versions")
    op.drop_table("watermarks")
    op.drop_table("datasets")
