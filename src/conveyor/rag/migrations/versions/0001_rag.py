"""RAG: collections, versions, aliases, documents, chunks, lineage, parse failures and the
embedding cache.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
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
        "rag_alias_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("collection", sa.String(length=63), nullable=False),
        sa.Column("alias", sa.String(length=100), nullable=False),
        sa.Column("from_number", sa.Integer(), nullable=True),
        sa.Column("to_number", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rag_alias_history")),
    )
    op.create_index(
        op.f("ix_rag_alias_history_collection_alias_at_id"),
        "rag_alias_history",
        ["collection", "alias", "at", "id"],
        unique=False,
    )
    op.create_table(
        "rag_collections",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("purge_epoch", sa.Integer(), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rag_collections")),
    )
    op.create_table(
        "rag_embeddings",
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model", "text_hash", name=op.f("pk_rag_embeddings")),
    )
    op.create_table(
        "rag_aliases",
        sa.Column("collection", sa.String(length=63), nullable=False),
        sa.Column("alias", sa.String(length=100), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection"],
            ["rag_collections.name"],
            name=op.f("fk_rag_aliases_collection_rag_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("collection", "alias", name=op.f("pk_rag_aliases")),
    )
    op.create_table(
        "rag_documents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("collection", sa.String(length=63), nullable=False),
        sa.Column("doc_id", sa.String(length=1000), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("chunker", sa.String(length=64), nullable=False),
        sa.Column("metadata", JSONB_DOCUMENT, nullable=False),
        sa.Column("subject", sa.String(length=1000), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection"],
            ["rag_collections.name"],
            name=op.f("fk_rag_documents_collection_rag_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rag_documents")),
    )
    op.create_index(
        op.f("ix_rag_documents_collection_doc_id"),
        "rag_documents",
        ["collection", "doc_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_rag_documents_collection_subject"),
        "rag_documents",
        ["collection", "subject"],
        unique=False,
    )
    op.create_table(
        "rag_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("collection", sa.String(length=63), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("parent", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("params", JSONB_DOCUMENT, nullable=False),
        sa.Column("counts", JSONB_DOCUMENT, nullable=False),
        sa.Column("index_digest", sa.String(length=71), nullable=True),
        sa.Column("bm25_digest", sa.String(length=71), nullable=True),
        sa.Column("gate", JSONB_DOCUMENT, nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["collection"],
            ["rag_collections.name"],
            name=op.f("fk_rag_versions_collection_rag_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rag_versions")),
        sa.UniqueConstraint("collection", "number", name=op.f("uq_rag_versions_collection_number")),
    )
    op.create_table(
        "rag_chunks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("document", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("collection", sa.String(length=63), nullable=False),
        sa.Column("doc_id", sa.String(length=1000), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("end", sa.Integer(), nullable=False),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.Column("metadata", JSONB_DOCUMENT, nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["document"],
            ["rag_documents.id"],
            name=op.f("fk_rag_chunks_document_rag_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rag_chunks")),
    )
    op.create_index(
        op.f("ix_rag_chunks_collection_doc_id"),
        "rag_chunks",
        ["collection", "doc_id"],
        unique=False,
    )
    op.create_index(op.f("ix_rag_chunks_document"), "rag_chunks", ["document"], unique=False)
    op.create_table(
        "rag_parse_failures",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("version_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=2000), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["rag_versions.id"],
            name=op.f("fk_rag_parse_failures_version_id_rag_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rag_parse_failures")),
    )
    op.create_index(
        op.f("ix_rag_parse_failures_version_id"), "rag_parse_failures", ["version_id"], unique=False
    )
    op.create_table(
        "rag_version_documents",
        sa.Column("version_id", sa.String(length=32), nullable=False),
        sa.Column("document", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["document"],
            ["rag_documents.id"],
            name=op.f("fk_rag_version_documents_document_rag_documents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["rag_versions.id"],
            name=op.f("fk_rag_version_documents_version_id_rag_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "document", name=op.f("pk_rag_version_documents")),
    )
    op.create_index(
        op.f("ix_rag_version_documents_document"),
        "rag_version_documents",
        ["document"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("rag_version_documents")
    op.drop_table("rag_parse_failures")
    op.drop_table("rag_chunks")
    op.drop_table("rag_versions")
    op.drop_table("rag_documents")
    op.drop_table("rag_aliases")
    op.drop_table("rag_embeddings")
    op.drop_table("rag_collections")
    op.drop_table("rag_alias_history")
