"""Collections against real components: the ONNX encoder, the hnsw/exact indexes, BM25, the
artifact store, the metadata store (SQLite here; pgvector in test_rag_collections_pgvector).

Builds are incremental (only new or changed documents are encoded, counted), versioned,
aliased with rollback; deletion removes vectors from every version; moving the alias
invalidates the retrieval cache; the gate refuses a worse version."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rag_collections_support import DOCS, Counting, encoder, eval_set, make_project, write_docs

from conveyor.errors import ConfigError, InvalidInputError, NotFoundError
from conveyor.project import Project
from conveyor.rag.api import RagService
from conveyor.rag.builder import build_collection
from conveyor.rag.collections import Collections
from conveyor.rag.deletion import delete_documents
from conveyor.testing.wait import wait_until


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with make_project(tmp_path) as proj:
        yield proj


def _docs_of(answer: dict) -> list[str]:
    return [h["doc_id"] for h in answer["hits"]]


def test_an_incremental_build_encodes_only_new_and_changed_documents(project: Project) -> None:
    counting = Counting(encoder())
    first = build_collection(project, "docs", actor="ana", embedder=counting)
    assert first.version.number == 1 and first.version.status == "ready"
    assert first.counts["documents"] == 4
    assert first.counts["embedded_chunks"] == first.counts["chunks"] >= 4
    assert len(counting.texts) == first.counts["chunks"]
    assert first.moved and project.service("rag", Collections).aliases("docs") == {"live": 1}

    root = Path(project.root) / "docs"
    (root / "cache.md").write_text("# Embedding cache\n\nVectors are kept per model and hash.\n")
    (root / "new.md").write_text("# Quantization\n\nINT8 weights halve the encoder's time.\n")
    (root / "bm25.md").unlink()
    counting.texts.clear()
    second = build_collection(project, "docs", actor="ana", embedder=counting)
    c = second.counts
    assert (c["new_documents"], c["changed_documents"], c["removed_documents"]) == (1, 1, 1)
    assert c["reused_documents"] == 2
    # each of the two edited documents is one short chunk: exactly two texts encoded
    assert len(counting.texts) == 2 == c["embedded_chunks"]
    assert sorted(t.split("\n")[0] for t in counting.texts) == [
        "# Embedding cache",
        "# Quantization",
    ]
    assert c["chunks"] == c["embedded_chunks"] + c["reused_chunks"]

    rag = project.service("rag", Collections)
    v2 = rag.version("docs", "live")
    assert v2.number == 2 and v2.parent == 1
    assert v2.params["model"] == encoder().model and v2.params["dimension"] == 384
    assert v2.params["index_url"] == "exact://" and v2.index_digest and v2.bm25_digest
    assert project.artifacts.exists(v2.index_digest)
    run = project.store.runs.get(v2.run_id)
    assert run.kind == "rag.build" and run.status == "succeeded"

    # nothing changed: nothing encoded, a new version all reused
    counting.texts.clear()
    third = build_collection(project, "docs", embedder=counting)
    assert counting.texts == [] and third.counts["reused_chunks"] == third.counts["chunks"]


def test_versions_aliases_rollback_and_what_is_served(project: Project) -> None:
    emb = encoder()
    build_collection(project, "docs", actor="ana", embedder=emb)
    (Path(project.root) / "docs" / "bm25.md").unlink()
    build_collection(project, "docs", actor="ana", embedder=emb)
    rag = project.service("rag", Collections)
    service = RagService(project)
    try:
        query = "term frequency inverse document frequency"
        assert "bm25.md" not in _docs_of(service.search("docs", query, k=4))
        assert "bm25.md" in _docs_of(service.search("docs", query, k=4, version=1))

        move = rag.rollback_alias("docs", actor="ana", reason="v2 lost a document")
        assert (move.from_version, move.to_version) == (2, 1)
        assert "rollback" in (move.reason or "")
        answer = service.search("docs", query, k=4)
        assert answer["version"] == 1 and "bm25.md" in _docs_of(answer)
        history = rag.alias_history("docs", "live")
        assert [(m.from_version, m.to_version) for m in history] == [(2, 1), (1, 2), (None, 1)]
        events = project.events.query(kind="rag.alias.moved", subject="docs").items
        assert len(events) == 3 and events[-1].payload["rollback"] is True
        with pytest.raises(NotFoundError, match="no version 9"):
            rag.move_alias("docs", "live", 9, actor="ana")
    finally:
        service.close()


def test_moving_the_alias_invalidates_the_retrieval_cache(project: Project) -> None:
    emb = encoder()
    build_collection(project, "docs", embedder=emb)
    (Path(project.root) / "docs" / "cache.md").write_text("# Cache\n\nA different text now.\n")
    build_collection(project, "docs", embedder=emb)
    service = RagService(project)
    try:
        query = "embedding cache keyed by model"
        first = service.search("docs", query, k=3)
        again = service.search("docs", query, k=3)
        assert (first["cache_hit"], again["cache_hit"]) == (False, True)
        assert again["hits"] == first["hits"] and again["version"] == 2
        project.service("rag", Collections).move_alias("docs", "live", 1, actor="ana")
        moved = service.search("docs", query, k=3)
        assert moved["cache_hit"] is False and moved["version"] == 1
        assert moved["hits"] != first["hits"]
        # other parameters are another cache entry
        assert service.search("docs", query, k=2)["cache_hit"] is False
        queries = project.events.query(kind="rag.query", subject="docs", limit=10).items
        project.events.flush()
        assert len(queries) >= 3 or project.events.count(kind="rag.query") >= 3
    finally:
        service.close()


@pytest.mark.parametrize("index_url", ["exact://", "hnsw://?m=16&ef_search=64"])
def test_deletion_by_document_and_subject_removes_vectors_from_every_version(
    tmp_path: Path, index_url: str
) -> None:
    with make_project(tmp_path, index=index_url) as project:
        _deletion(project)


def _deletion(project: Project) -> None:
    emb = encoder()
    build_collection(project, "docs", embedder=emb)
    (Path(project.root) / "docs" / "new.md").write_text("# Extra\n\nAn extra page.\n")
    build_collection(project, "docs", embedder=emb)
    rag = project.service("rag", Collections)
    old = {v.number: (v.index_digest, v.bm25_digest) for v in rag.versions("docs")}
    service = RagService(project)
    try:
        query = "erase a customer's tulip orders under GDPR"
        for version in (1, 2):
            assert _docs_of(service.search("docs", query, k=4, version=version))[0] == "gdpr.md"
        deleted = delete_documents(project, "docs", subject="customer-42", actor="dpo")
        assert (deleted.documents, deleted.versions) == (1, (1, 2)) and deleted.chunks >= 1
        for version in (1, 2):
            answer = service.search("docs", query, k=10, version=version)
            assert answer["cache_hit"] is False
            assert "gdpr.md" not in _docs_of(answer)
            # the vector itself is gone from the index files, not only filtered out
            loaded = service.loaded("docs", version)
            import numpy as np

            ids = np.asarray(sorted(loaded.chunks), dtype=np.int64)
            assert len(loaded.index) == len(ids)
        for v in rag.versions("docs"):
            assert v.index_digest != old[v.number][0]
            assert not project.artifacts.exists(old[v.number][0])
            assert v.counts["deleted_chunks"] == deleted.chunks

        by_id = delete_documents(project, "docs", doc_ids=["bm25.md"], actor="dpo")
        assert by_id.documents == 1
        answer = service.search("docs", "term frequency inverse document frequency", k=10)
        assert "bm25.md" not in _docs_of(answer)
        audit = project.events.query(kind="rag.deleted", subject="docs").items
        assert [e.payload["by"] for e in audit] == ["subject", "doc"]
        assert all("customer-42" not in str(e.payload) for e in audit)
        # a rebuild from the same sources brings the document back as a new one
        rebuilt = build_collection(project, "docs", embedder=emb)
        assert rebuilt.counts["new_documents"] == 2
    finally:
        service.close()


def test_parse_failures_are_recorded_and_skipped(project: Project) -> None:
    docs = Path(project.root) / "docs"
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    (docs / "empty.md").write_text("")
    result = build_collection(project, "docs", embedder=encoder())
    assert result.version.status == "ready" and result.counts["documents"] == 4
    failed = dict(project.service("rag", Collections).parse_failures(result.version.id))
    assert set(failed) == {"docs/broken.pdf", "docs/empty.md"}
    assert "unreadable PDF" in failed["docs/broken.pdf"]
    assert "no text" in failed["docs/empty.md"]
    events = project.events.query(kind="rag.version.built", subject="docs").items
    assert events[-1].payload["parse_failures"] == 2


def test_an_encoder_whose_dimension_does_not_match_the_index_is_refused(
    project: Project,
) -> None:
    lying = Counting(encoder(), claim=512)
    with pytest.raises(ConfigError, match=r"384.*512|512.*384"):
        build_collection(project, "docs", embedder=lying)
    failed = project.service("rag", Collections).versions("docs")[0]
    assert failed.status == "failed" and "384" in (failed.error or "")
    assert project.service("rag", Collections).aliases("docs") == {}


def test_the_gate_refuses_a_worse_version_and_force_is_recorded(tmp_path: Path) -> None:
    gate = {"eval_set": "evals.jsonl", "tolerance": 0.05}
    with make_project(tmp_path, gate=gate) as project:
        eval_set(tmp_path)
        emb = encoder()
        first = build_collection(project, "docs", actor="ana", embedder=emb)
        assert first.version.status == "ready" and first.gate is not None
        assert first.gate["baseline_ndcg@10"] is None and first.gate["ndcg@10"] > 0.9
        assert "best_weight" in first.version.params["fusion"]

        # the relevant documents lose their content: nDCG@10 falls
        noise = {
            n: f"# Page {i}\n\nUnrelated words about weather {i}.\n" for i, n in enumerate(DOCS)
        }
        write_docs(tmp_path / "docs", noise)
        worse = build_collection(project, "docs", actor="ana", embedder=emb)
        assert worse.version.status == "refused" and not worse.moved
        assert worse.gate is not None and worse.gate["passed"] is False
        assert worse.gate["ndcg@10"] < worse.gate["baseline_ndcg@10"] - 0.05
        rag = project.service("rag", Collections)
        assert rag.aliases("docs") == {"live": 1}
        with pytest.raises(InvalidInputError, match="refused"):
            rag.move_alias("docs", "live", 2, actor="ana")

        forced = build_collection(
            project, "docs", actor="ana", embedder=emb, force=True, reason="content rewrite"
        )
        assert forced.version.status == "refused" and forced.moved
        last = rag.alias_history("docs", "live")[0]
        assert last.forced and "content rewrite" in (last.reason or "")
        assert rag.aliases("docs") == {"live": 3}


def test_unknown_collection_and_bad_queries(project: Project) -> None:
    build_collection(project, "docs", embedder=encoder())
    service = RagService(project)
    try:
        with pytest.raises(NotFoundError, match="declared: docs"):
            service.search("nope", "x")
        with pytest.raises(InvalidInputError, match="unknown metadata field 'colour'"):
            service.search("docs", "x", filters={"colour": "red"})
        with pytest.raises(InvalidInputError, match="k must be"):
            service.search("docs", "x", k=0)
        by_author = service.search("docs", "search", k=10, filters={"author": "bo"})
        assert {h["metadata"]["author"] for h in by_author["hits"]} == {"bo"}
        both = service.search("docs", "search", k=10, filters={"author": {"in": ["ana", "bo"]}})
        assert len(both["hits"]) > len(by_author["hits"])
        long = service.search("docs", "alias " * 400, k=1)
        assert long["warnings"] and "truncated" in long["warnings"][0]
    finally:
        service.close()


def test_an_alias_moved_by_another_process_is_served_within_the_poll(tmp_path: Path) -> None:
    with make_project(tmp_path) as project:
        emb = encoder()
        build_collection(project, "docs", embedder=emb)
        (tmp_path / "docs" / "cache.md").write_text("# Cache\n\nAnother text.\n")
        build_collection(project, "docs", embedder=emb)
        service = RagService(project)
        try:
            assert service.search("docs", "embedding cache", k=2)["version"] == 2
            moved = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "conveyor",
                    "rag",
                    "alias",
                    "docs",
                    "1",
                    "-C",
                    str(tmp_path),
                ],
                capture_output=True,
                text=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
                check=False,
            )
            assert moved.returncode == 0, moved.stderr
            # this process was not told: it reads the alias again after rag.alias_poll_s (1 s)
            found = wait_until(
                lambda: (a := service.search("docs", "embedding cache", k=2))["version"] == 1 and a,
                message="the alias moved by another process is not served",
                timeout=30,
            )
            assert found["cache_hit"] is False
        finally:
            service.close()


def test_a_hung_store_never_stalls_a_query_once_the_alias_is_known(tmp_path: Path) -> None:
    with make_project(tmp_path) as project:
        build_collection(project, "docs", embedder=encoder())
        service = RagService(project)
        try:
            assert service.search("docs", "embedding cache", k=2)["version"] == 1
            release, readers = threading.Event(), []
            number_of = service.collections.number_of

            def hung(*args: object, **kwargs: object) -> int:  # the store stops answering
                readers.append(threading.current_thread().name)
                release.wait(30)
                return number_of(*args, **kwargs)  # type: ignore[arg-type]

            service.collections.number_of = hung  # type: ignore[method-assign]
            time.sleep(service.spec.alias_poll_s + 0.05)  # the known alias is now stale
            answers = [service.search("docs", q, k=2) for q in ("alpha", "beta", "gamma")]
            # every query answered from the last known version while the re-read hangs,
            # and the store was read once, off the query path
            assert [a["version"] for a in answers] == [1, 1, 1]
            assert not release.is_set()
            wait_until(lambda: readers, message="the alias was never read again", timeout=10)
            # on the service's one long-lived poll thread, not a thread started by a query
            assert readers == ["conveyor-rag-poll"]
            release.set()
        finally:
            service.close()


def test_a_near_duplicate_query_is_answered_from_the_cache(tmp_path: Path) -> None:
    env = {"CONVEYOR_RAG__CACHE__NEAR_DUPLICATE": "0.95"}
    with make_project(tmp_path, env=env) as project:
        build_collection(project, "docs", embedder=encoder())
        service = RagService(project)
        try:
            first = service.search("docs", "How is the embedding cache keyed?", k=3)
            assert first["cache_hit"] is False
            near = service.search("docs", "how is the embedding cache keyed", k=3)
            assert near["cache_hit"] is True and near["near_duplicate"] is True
            assert near["hits"] == first["hits"]
            other = service.search("docs", "erase a customer's orders under GDPR", k=3)
            assert other["cache_hit"] is False
            # other parameters never share an answer
            assert (
                service.search("docs", "how is the embedding cache keyed", k=2)["cache_hit"]
                is False
            )
        finally:
            service.close()


def test_a_closed_service_leaves_no_poll_thread_behind(tmp_path: Path) -> None:
    with make_project(tmp_path) as project:
        build_collection(project, "docs", embedder=encoder())
        service = RagService(project)
        try:
            assert service.search("docs", "embedding cache", k=2)["version"] == 1
            time.sleep(service.spec.alias_poll_s + 0.05)  # the known alias is now stale
            service.search("docs", "embedding cache", k=2)  # its re-read starts the poller
            poller = wait_until(
                lambda: service._poller._thread, message="the poll thread to start", timeout=10
            )
        finally:
            service.close()
        wait_until(lambda: not poller.is_alive(), message="the poll thread to end", timeout=30)
