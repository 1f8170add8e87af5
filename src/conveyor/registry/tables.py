"""The model registry's tables: models, versions, aliases and their history.

Declared on the metadata store's ``Base``; created and changed only by this
capability's migration chain (``migrations/``), which a test holds equal to them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base, VersionedMixin, one_of
from conveyor.store.types import JSONB_DOCUMENT, utcnow

__all__ = [
    "MODEL_VERSION_STATUSES",
    "AliasHistoryRecord",
    "ModelAliasRecord",
    "ModelVersionRecord",
    "RegisteredModelRecord",
]

MODEL_VERSION_STATUSES = ("registered", "archived")


class RegisteredModelRecord(VersionedMixin, Base):
    """A named model; its versions are numbered 1, 2, 3... from ``latest_version``."""

    __tablename__ = "registered_models"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    description: Mapped[str | None] = mapped_column(sa.Text)
    latest_version: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelVersionRecord(Base):
    """One immutable version of a model: its artifact, signature and lineage.

    Only ``status`` ever changes (archiving), so the row carries no version column.
    """

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    model: Mapped[str] = mapped_column(
        sa.String(200), sa.ForeignKey("registered_models.name", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(sa.Integer)
    flavor: Mapped[str] = mapped_column(sa.String(50))
    artifact_digest: Mapped[str] = mapped_column(sa.String(80))
    artifact_size: Mapped[int] = mapped_column(sa.BigInteger)
    # {"inputs": [{"name", "type", "nullable"}]}; None when registered without training data.
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSONB_DOCUMENT)
    # Library name -> version at save time, compared at load.
    libraries: Mapped[dict[str, str]] = mapped_column(JSONB_DOCUMENT)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    metrics: Mapped[dict[str, float]] = mapped_column(JSONB_DOCUMENT)
    tags: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    run_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("runs.id", ondelete="SET NULL")
    )
    parent_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    git_commit: Mapped[str | None] = mapped_column(sa.String(64))
    git_dirty: Mapped[bool | None] = mapped_column(sa.Boolean)
    environment: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT)
    dataset_version_ids: Mapped[list[str]] = mapped_column(JSONB_DOCUMENT)
    status: Mapped[str] = mapped_column(sa.String(20), default="registered")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What else the version was built from, beyond data set versions: e.g. the feature
    # service (and the versions of its views) the training frame was joined from:
    # [{"kind": "feature_service", "name": ..., "version": ..., "views": {...}}].
    inputs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB_DOCUMENT)
    # The version's prediction as data, when it has one (conveyor.registry.formula):
    # {"kind": "linear-formula/1", "digest": "sha256:...", "size": N}, an artifact.
    compiled: Mapped[dict[str, Any] | None] = mapped_column(JSONB_DOCUMENT)

    __table_args__ = (
        sa.CheckConstraint(one_of("status", MODEL_VERSION_STATUSES), name="status"),
        sa.UniqueConstraint("model", "number"),
        # Newest-first keyset listings, across all models and within one.
        sa.Index(None, "created_at", "id"),
        sa.Index(None, "model", "created_at", "id"),
        sa.Index(None, "run_id"),
        sa.Index(None, "parent_id"),
    )


class ModelAliasRecord(VersionedMixin, Base):
    """A movable name (``champion``, ``challenger``...) pointing at one version of a model."""

    __tablename__ = "model_aliases"

    model: Mapped[str] = mapped_column(
        sa.String(200),
        sa.ForeignKey("registered_models.name", ondelete="CASCADE"),
        primary_key=True,
    )
    alias: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    version_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("model_versions.id", ondelete="CASCADE")
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (sa.Index(None, "version_id"),)


class AliasHistoryRecord(Base):
    """Append-only: every move of an alias, by whom, when and why.

    Version ids are plain strings, not foreign keys, so the history outlives
    what it mentions.
    """

    __tablename__ = "alias_history"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    model: Mapped[str] = mapped_column(sa.String(200))
    alias: Mapped[str] = mapped_column(sa.String(100))
    from_version_id: Mapped[str | None] = mapped_column(sa.String(32))
    to_version_id: Mapped[str | None] = mapped_column(sa.String(32))
    actor: Mapped[str | None] = mapped_column(sa.String(200))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    forced: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index(None, "model", "alias", "at", "id"),)
