"""The RAG capability's tables: collections, versions, aliases, documents, chunks, lineage,
parse failures and the embedding cache.

- ``rag_collections``: one row per collection built at least once; ``purge_epoch`` grows on
  every deletion, so cached retrievals from before it are never served again.
- ``rag_versions``: an immutable build: number, status (``building``, ``ready``,
  ``refused``, ``failed``), its parameters (chunking, embedder identity, index URL and
  parameters, BM25 parameters, the tuned fusion weight), counts, the digests of its index
  and BM25 files in the artifact store, the gate's report, its parent version.
- ``rag_documents``: one row per (document id, content hash) ever built; a changed document
  gets a new row, an unchanged one is shared by the versions that hold it.
- ``rag_chunks``: the chunks of a document row; ``id`` (int64) is the id in the vector and
  BM25 indexes; ``vector`` is its embedding (float32 bytes), so a later version reuses it.
- ``rag_version_documents``: lineage, which document rows a version holds (its chunks follow).
- ``rag_aliases`` / ``rag_alias_history``: movable names (``live``) with optimistic
  concurrency and an append-only history for rollback, as model aliases.
- ``rag_parse_failures``: what a build could not read, and why.
- ``rag_embeddings``: the embedding cache, keyed by model identity and text hash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base, VersionedMixin
from conveyor.store.types import JSONB_DOCUMENT, utcnow

__all__ = [
    "RagAliasHistoryRecord",
    "RagAliasRecord",
    "RagChunkRecord",
    "RagCollectionRecord",
    "RagDocumentRecord",
    "RagEmbeddingRecord",
    "RagParseFailureRecord",
    "RagVersionDocumentRecord",
    "RagVersionRecord",
]

_BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


class RagCollectionRecord(VersionedMixin, Base):
    """A collection that has been built at least once."""

    __tablename__ = "rag_collections"

    name: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    purge_epoch: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_number: Mapped[int] = mapped_column(sa.Integer, default=0)


class RagVersionRecord(Base):
    """One build of a collection (immutable once ``ready``, except that a deletion rewrites
    its index files and counts)."""

    __tablename__ = "rag_versions"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    collection: Mapped[str] = mapped_column(
        sa.String(63), sa.ForeignKey("rag_collections.name", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    parent: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT, default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB_DOCUMENT, default=dict)
    index_digest: Mapped[str | None] = mapped_column(sa.String(71), nullable=True)
    bm25_digest: Mapped[str | None] = mapped_column(sa.String(71), nullable=True)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSONB_DOCUMENT, nullable=True)
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)

    __table_args__ = (sa.UniqueConstraint("collection", "number"),)


class RagDocumentRecord(Base):
    """One content of one document of a collection."""

    __tablename__ = "rag_documents"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    collection: Mapped[str] = mapped_column(
        sa.String(63), sa.ForeignKey("rag_collections.name", ondelete="CASCADE")
    )
    doc_id: Mapped[str] = mapped_column(sa.String(1000))
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    chunker: Mapped[str] = mapped_column(sa.String(64))
    """Digest of the chunking settings and embedder identity the chunks were made with."""
    doc_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB_DOCUMENT, default=dict)
    subject: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        sa.Index(None, "collection", "doc_id"),
        sa.Index(None, "collection", "subject"),
    )


class RagChunkRecord(Base):
    """A chunk of a document row; ``id`` is its id in the indexes."""

    __tablename__ = "rag_chunks"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    document: Mapped[int] = mapped_column(
        _BIGID, sa.ForeignKey("rag_documents.id", ondelete="CASCADE")
    )
    collection: Mapped[str] = mapped_column(sa.String(63))
    doc_id: Mapped[str] = mapped_column(sa.String(1000))
    ordinal: Mapped[int] = mapped_column(sa.Integer)
    text: Mapped[str] = mapped_column(sa.Text)
    text_hash: Mapped[str] = mapped_column(sa.String(64))
    start: Mapped[int] = mapped_column(sa.Integer)
    end: Mapped[int] = mapped_column(sa.Integer)
    n_tokens: Mapped[int] = mapped_column(sa.Integer)
    chunk_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB_DOCUMENT, default=dict)
    vector: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)

    __table_args__ = (sa.Index(None, "document"), sa.Index(None, "collection", "doc_id"))


class RagVersionDocumentRecord(Base):
    """Lineage: a version holds a document row (and so its chunks)."""

    __tablename__ = "rag_version_documents"

    version_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("rag_versions.id", ondelete="CASCADE"), primary_key=True
    )
    document: Mapped[int] = mapped_column(
        _BIGID, sa.ForeignKey("rag_documents.id", ondelete="CASCADE"), primary_key=True
    )

    __table_args__ = (sa.Index(None, "document"),)


class RagAliasRecord(VersionedMixin, Base):
    """A movable name (``live``) pointing at one version of a collection."""

    __tablename__ = "rag_aliases"

    collection: Mapped[str] = mapped_column(
        sa.String(63), sa.ForeignKey("rag_collections.name", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    number: Mapped[int] = mapped_column(sa.Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RagAliasHistoryRecord(Base):
    """Append-only: every move of a collection alias, by whom, when and why."""

    __tablename__ = "rag_alias_history"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    collection: Mapped[str] = mapped_column(sa.String(63))
    alias: Mapped[str] = mapped_column(sa.String(100))
    from_number: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    to_number: Mapped[int] = mapped_column(sa.Integer)
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    forced: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.Index(None, "collection", "alias", "at", "id"),)


class RagParseFailureRecord(Base):
    """A source a build could not turn into a document."""

    __tablename__ = "rag_parse_failures"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    version_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("rag_versions.id", ondelete="CASCADE")
    )
    source: Mapped[str] = mapped_column(sa.String(2000))
    reason: Mapped[str] = mapped_column(sa.Text)

    __table_args__ = (sa.Index(None, "version_id"),)


class RagEmbeddingRecord(Base):
    """The embedding cache: a text's vector under one exact model."""

    __tablename__ = "rag_embeddings"

    model: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    text_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
