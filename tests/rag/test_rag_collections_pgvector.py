"""A collection on PostgreSQL end to end: the metadata store and the vector index
(``postgresql://``, pgvector, one table per version) in the real database. Deleting a
document deletes its rows from every version's table; search no longer returns it."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from rag_collections_support import encoder, make_project

from conveyor.backends import BackendURL
from conveyor.rag.api import RagService
from conveyor.rag.builder import build_collection
from conveyor.rag.collections import Collections
from conveyor.rag.deletion import delete_documents

pytestmark = pytest.mark.postgres


def _ids_in(pg_url: str, table: str) -> set[int]:
    dsn = BackendURL.parse(pg_url).with_(driver=None).render(hide_password=False)
    with psycopg.connect(dsn) as conn:
        return {int(r[0]) for r in conn.execute(f'SELECT id FROM "{table}"')}


def test_pgvector_versions_and_deletion(tmp_path: Path, pg_url: str) -> None:
    index = BackendURL.parse(pg_url)
    index_url = index.with_(query={**index.query, "index": "hnsw"}).render(hide_password=False)
    with make_project(tmp_path, index=index_url, env={"CONVEYOR_STORE": pg_url}) as project:
        emb = encoder()
        first = build_collection(project, "docs", embedder=emb)
        (tmp_path / "docs" / "extra.md").write_text("# Extra\n\nAn extra page on tulips.\n")
        second = build_collection(project, "docs", embedder=emb)
        assert first.version.index_digest is None  # the table is the index
        assert second.version.params["index"]["table"] == "rag_docs_v2"
        rag = project.service("rag", Collections)
        gdpr = [
            c.id for c in rag.version_chunks(second.version.id).values() if c.doc_id == "gdpr.md"
        ]
        assert gdpr and set(gdpr) <= _ids_in(pg_url, "rag_docs_v1")
        assert set(gdpr) <= _ids_in(pg_url, "rag_docs_v2")

        service = RagService(project)
        try:
            query = "erase a customer's tulip orders under GDPR"
            assert service.search("docs", query, k=3)["hits"][0]["doc_id"] == "gdpr.md"
            deleted = delete_documents(project, "docs", doc_ids=["gdpr.md"], actor="dpo")
            assert deleted.versions == (1, 2)
            for table in ("rag_docs_v1", "rag_docs_v2"):
                assert not set(gdpr) & _ids_in(pg_url, table)
            for version in (1, 2):
                answer = service.search("docs", query, k=10, version=version)
                assert "gdpr.md" not in [h["doc_id"] for h in answer["hits"]]
                assert answer["cache_hit"] is False
        finally:
            service.close()
