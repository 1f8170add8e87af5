"""Datasets, versions, lineage, quarantine, watermarks, schedules; runs get parents and heartbeats.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import JSONB_DOCUMENT, ExactJSON, UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
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
        "schedules",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("last_fired_at", UTCDateTime(), nullable=True),
        sa.Column("next_fire_at", UTCDateTime(), nullable=True),
        sa.Column("state", JSONB_DOCUMENT, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_schedules")),
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
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dataset_versions_content_hash"), ["content_hash"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dataset_versions_dataset_created_at"),
            ["dataset", "created_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_dataset_versions_run_id"), ["run_id"], unique=False)

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
    with op.batch_alter_table("lineage", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lineage_dataset_version_id"), ["dataset_version_id"], unique=False
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
    with op.batch_alter_table("quarantine_batches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quarantine_batches_dataset_created_at"),
            ["dataset", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_quarantine_batches_status_created_at"),
            ["status", "created_at"],
            unique=False,
        )

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))
        batch_op.create_index(batch_op.f("ix_runs_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_runs_status_heartbeat_at"), ["status", "heartbeat_at"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_runs_parent_id_runs"), "runs", ["parent_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_runs_parent_id_runs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_runs_status_heartbeat_at"))
        batch_op.drop_index(batch_op.f("ix_runs_parent_id"))
        batch_op.drop_column("attempt")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("parent_id")

    with op.batch_alter_table("quarantine_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_batches_status_created_at"))
        batch_op.drop_index(batch_op.f("ix_quarantine_batches_dataset_created_at"))

    op.drop_table("quarantine_batches")
    with op.batch_alter_table("lineage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lineage_dataset_version_id"))

    op.drop_table("lineage")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_versions_run_id"))
        batch_op.drop_index(batch_op.f("ix_dataset_versions_dataset_created_at"))
        batch_op.drop_index(batch_op.f("ix_dataset_versions_content_hash"))

    op.drop_table("dataset_versions")
    op.drop_table("watermarks")
    op.drop_table("schedules")
    op.drop_table("datasets")
