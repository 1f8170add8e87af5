"""Deleting documents from a collection, by document id or by subject key (GDPR).

::

    deleted = delete_documents(project, "docs", doc_ids=["guide/old.md"], actor="ana")
    deleted = delete_documents(project, "tickets", subject="ana@example.com", actor="dpo")

What goes, in every stored version that holds the documents:

- their chunks' vectors: each version's index files are loaded, the ids removed and the
  files stored again (a new digest recorded in the version; the old archive deleted from the
  artifact store when no version uses it any more, with its unpacked copy), or for a
  ``postgresql://`` index the rows deleted from the version's table;
- their chunks in the BM25 files, the same way;
- the document and chunk rows, the lineage rows, and the texts' vectors in the embedding
  cache;
- cached retrievals: the collection's deletion epoch is part of every cache key, so no
  answer from before is served again (they expire after ``rag.cache.ttl_s``); servers
  reload the rewritten versions.

An audit event ``rag.deleted`` records how many documents, chunks and versions, and the
sha256 of the key, never the key.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError
from conveyor.rag.events import RAG_DELETED

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.rag.collections import Collections, Version

__all__ = ["Deleted", "delete_documents"]


@dataclass(frozen=True, slots=True)
class Deleted:
    """What a deletion removed."""

    collection: str
    documents: int
    chunks: int
    versions: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "documents": self.documents,
            "chunks": self.chunks,
            "versions": list(self.versions),
        }


def delete_documents(
    project: Project,
    name: str,
    *,
    doc_ids: Sequence[str] = (),
    subject: str | None = None,
    actor: str | None = None,
) -> Deleted:
    """Remove documents (by id, or every document of ``subject``) and their chunks and
    vectors from every version of ``name`` (see the module)."""
    import sqlalchemy as sa

    from conveyor.rag.collections import Collections, SqlEmbeddingCache, Version, _notify
    from conveyor.rag.tables import RagChunkRecord as K
    from conveyor.rag.tables import RagCollectionRecord as C
    from conveyor.rag.tables import RagDocumentRecord as D
    from conveyor.rag.tables import RagVersionDocumentRecord as VD
    from conveyor.rag.tables import RagVersionRecord as V

    if bool(doc_ids) == (subject is not None):
        raise InvalidInputError(
            "name the documents to delete by id or by subject key (one of the two)",
            field="doc_ids",
        )
    collections = project.service("rag", Collections)
    store = collections.store
    by = "subject" if subject is not None else "doc"
    with store.read() as session:
        where = D.subject == subject if subject is not None else D.doc_id.in_(list(doc_ids))
        rows = [int(r) for r in session.scalars(sa.select(D.id).where(D.collection == name, where))]
        chunk_rows = list(
            session.execute(sa.select(K.id, K.text_hash).where(K.document.in_(rows or [-1])))
        )
        version_rows = [
            Version.of(v)
            for v in session.scalars(
                sa.select(V)
                .join(VD, VD.version_id == V.id)
                .where(VD.document.in_(rows or [-1]))
                .distinct()
            )
        ]
        n_docs = len(set(session.scalars(sa.select(D.doc_id).where(D.id.in_(rows or [-1])))))
    chunk_ids = sorted({int(i) for i, _ in chunk_rows})
    hashes = sorted({h for _, h in chunk_rows})
    touched: list[int] = []
    old_digests: set[str] = set()
    for version in version_rows:
        removed_here = _rewrite(collections, version, chunk_ids, old_digests)
        if removed_here is not None:
            touched.append(int(version.number))
    with store.session() as session:
        if rows:
            session.execute(sa.delete(K).where(K.document.in_(rows)))
            session.execute(sa.delete(VD).where(VD.document.in_(rows)))
            session.execute(sa.delete(D).where(D.id.in_(rows)))
        coll = session.get(C, name)
        if coll is not None:
            coll.purge_epoch = int(coll.purge_epoch) + 1
    if hashes:
        SqlEmbeddingCache(store).forget(hashes)
    _drop_unused(collections, old_digests)
    key = subject if subject is not None else "\n".join(sorted(doc_ids))
    project.events.record(
        RAG_DELETED,
        subject=name,
        actor=actor,
        payload={
            "by": by,
            "key_digest": hashlib.sha256(key.encode()).hexdigest(),
            "documents": n_docs,
            "chunks": len(chunk_ids),
            "versions": len(touched),
        },
    )
    _notify(name)
    return Deleted(name, n_docs, len(chunk_ids), tuple(sorted(touched)))


def _rewrite(
    collections: Collections, version: Version, chunk_ids: list[int], old: set[str]
) -> int | None:
    """Remove ``chunk_ids`` from one version's indexes; how many were in its vector index."""
    import numpy as np

    from conveyor.rag.lexical import BM25Index
    from conveyor.rag.tables import RagVersionRecord as V

    if version.status not in ("ready", "refused") or not chunk_ids:
        return None
    ids = np.asarray(chunk_ids, dtype=np.int64)
    removed = 0
    new_index = version.index_digest
    if version.params.get("index_url"):
        with tempfile.TemporaryDirectory(prefix="conveyor-rag-") as tmp:
            work = Path(tmp) / "in"
            if version.index_digest:
                shutil.copytree(collections.folder(version.index_digest), work)
            index = collections.open_index(version, work if version.index_digest else None)
            try:
                removed = index.remove(ids)
                if version.index_digest:
                    out = Path(tmp) / "out"
                    out.mkdir()
                    index.save(out)
                    new_index = collections.put_folder(out)
            finally:
                index.close()
    new_bm25 = version.bm25_digest
    if version.bm25_digest:
        with tempfile.TemporaryDirectory(prefix="conveyor-rag-") as tmp:
            bm25 = BM25Index.load(collections.folder(version.bm25_digest))
            bm25.remove(ids)
            bm25.save(Path(tmp))
            new_bm25 = collections.put_folder(Path(tmp))
    with collections.store.session() as session:
        row = session.get(V, version.id)
        if row is not None:
            counts = dict(row.counts or {})
            counts["chunks"] = max(0, int(counts.get("chunks", 0)) - removed)
            counts["deleted_chunks"] = int(counts.get("deleted_chunks", 0)) + removed
            row.counts = counts
            row.index_digest = new_index
            row.bm25_digest = new_bm25
    for digest in (version.index_digest, version.bm25_digest):
        if digest and digest not in (new_index, new_bm25):
            old.add(digest)
    return removed


def _drop_unused(collections: Collections, digests: set[str]) -> None:
    """Delete archives no version refers to any more, and their unpacked copies."""
    import sqlalchemy as sa

    from conveyor.rag.tables import RagVersionRecord as V

    if not digests:
        return
    with collections.store.read() as session:
        used = set(
            session.scalars(sa.select(V.index_digest).where(V.index_digest.in_(list(digests))))
        ) | set(session.scalars(sa.select(V.bm25_digest).where(V.bm25_digest.in_(list(digests)))))
    for digest in digests - used:
        collections.artifacts.delete(digest)
        collections.forget_folder(digest)
