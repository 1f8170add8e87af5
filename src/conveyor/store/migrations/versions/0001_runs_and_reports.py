"""Runs, reports and their check results.

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
        "runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("params", JSONB_DOCUMENT, nullable=False),
        sa.Column("metrics", JSONB_DOCUMENT, nullable=False),
        sa.Column("tags", JSONB_DOCUMENT, nullable=False),
        sa.Column("artifacts", JSONB_DOCUMENT, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'cancelled')", name=op.f("ck_runs_status")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["runs.id"], name=op.f("fk_runs_parent_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_kind_started_at"), "runs", ["kind", "started_at"], unique=False)
    op.create_index(op.f("ix_runs_parent_id"), "runs", ["parent_id"], unique=False)
    op.create_index(op.f("ix_runs_started_at_id"), "runs", ["started_at", "id"], unique=False)
    op.create_index(
        op.f("ix_runs_status_heartbeat_at"), "runs", ["status", "heartbeat_at"], unique=False
    )
    op.create_table(
        "reports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("subject_version", sa.String(length=100), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("verdict", sa.String(length=30), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_reports_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
    )
    op.create_index(op.f("ix_reports_created_at_id"), "reports", ["created_at", "id"], unique=False)
    op.create_index(
        op.f("ix_reports_kind_created_at"), "reports", ["kind", "created_at"], unique=False
    )
    op.create_index(op.f("ix_reports_run_id"), "reports", ["run_id"], unique=False)
    op.create_index(
        op.f("ix_reports_subject_created_at"), "reports", ["subject", "created_at"], unique=False
    )
    op.create_table(
        "check_results",
        sa.Column("report_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("observed", ExactJSON(), nullable=True),
        sa.Column("threshold", ExactJSON(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "severity IN ('error', 'warning')", name=op.f("ck_check_results_severity")
        ),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_check_results_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_id", "position", name=op.f("pk_check_results")),
    )


def downgrade() -> None:
    op.drop_table("check_results")
    op.drop_index(op.f("ix_reports_subject_created_at"), table_name="reports")
    op.drop_index(op.f("ix_reports_run_id"), table_name="reports")
    op.drop_index(op.f("ix_reports_kind_created_at"), table_name="reports")
    op.drop_index(op.f("ix_reports_created_at_id"), table_name="reports")
    op.drop_table("reports")
    op.drop_index(op.f("ix_runs_status_heartbeat_at"), table_name="runs")
    op.drop_index(op.f("ix_runs_started_at_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_parent_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_kind_started_at"), table_name="runs")
    op.drop_table("runs")
