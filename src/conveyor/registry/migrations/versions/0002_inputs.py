"""A version's lineage beyond data sets: the feature service (and its views) it was trained on.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import JSONB_DOCUMENT

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, so SQLite adds it without a table rebuild; earlier versions read as [].
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("inputs", JSONB_DOCUMENT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("inputs")
