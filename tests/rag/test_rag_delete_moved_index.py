"""Deleting documents from a version built on ``postgresql://`` after the collection's index
setting moved to another kind (``hnsw://``): the rows go from the version's own table, the
index it was built on, as the query path opens it (the deletion opened the index the
setting names now, found nothing to remove, and left the vectors in PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from rag_collections_support import encoder, make_project

from conveyor.backends import BackendURL
from conveyor.project import Project
from conveyor.rag.api import RagService
from conveyor.rag.builder import build_collection
from conveyor.rag.collections import Collections
from conveyor.rag.deletion import delete_documents

pytestmark = pytest.mark.postgres


def _ids_in(pg_url: str, table: str) -> set[int]:
    dsn = BackendURL.parse(pg_url).with_(driver=None).render(hide_password=False)
    with psycopg.connect(dsn) as conn:
        return {int(r[0]) for r in conn.execute(f'SELECT id FROM "{table}"')}


def test_deletion_reaches_a_pgvector_version_after_the_index_setting_moved(
    tmp_path: Path, pg_url: str
) -> None:
    env = {"CONVEYOR_STORE": pg_url}
    with make_project(tmp_path, index=pg_url, env=env) as project:
        build_collection(project, "docs", embedder=encoder())
    config = tmp_path / "conveyor.yaml"
    config.write_text(config.read_text().replace(json.dumps(pg_url), json.dumps("hnsw://")))
    with Project.open(tmp_path, env=env) as project:
        rag = project.service("rag", Collections)
        assert rag.declared("docs").index == "hnsw://"
        version = rag.version("docs", 1)
        gdpr = [c.id for c in rag.version_chunks(version.id).values() if c.doc_id == "gdpr.md"]
        assert gdpr and set(gdpr) <= _ids_in(pg_url, "rag_docs_v1")
        deleted = delete_documents(project, "docs", doc_ids=["gdpr.md"], actor="dpo")
        assert deleted.versions == (1,)
        assert not set(gdpr) & _ids_in(pg_url, "rag_docs_v1")
        service = RagService(project)
        try:
            answer = service.search("docs", "erase a customer's tulip orders", k=10)
            assert answer["version"] == 1
            assert "gdpr.md" not in [h["doc_id"] for h in answer["hits"]]
        finally:
            service.close()
