"""A version's prediction as data (a linear model's formula), recorded at registration.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import JSONB_DOCUMENT

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: versions registered before it are served by their own predict.
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("compiled", JSONB_DOCUMENT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("compiled")
