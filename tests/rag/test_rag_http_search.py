"""POST /v1/rag/{collection}/search and /context on the real server app (uvicorn in a thread),
with the project's keys: a viewer may search, no key is refused; a filter on an unknown
field is a 422 naming it; a long query comes back with a warning; the metrics have a
histogram per stage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rag_collections_support import encoder, make_project

from conveyor.governance.keys import ApiKeys
from conveyor.rag.builder import build_collection
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("raghttp")
    project = make_project(root)
    build_collection(project, "docs", actor="ana", embedder=encoder())
    keys = ApiKeys(project.store, project.events)
    admin, _ = keys.create("admin", "admin")
    viewer, _ = keys.create("viewer", "viewer")
    running = ThreadedServer(create_app(project))
    running.start()
    try:
        yield {"url": running.url, "viewer": viewer, "admin": admin, "project": project}
    finally:
        running.stop()
        project.close()


def _post(served: dict[str, Any], path: str, body: Any, key: str | None = "viewer") -> Any:
    headers = {} if key is None else {"Authorization": f"Bearer {served[key]}"}
    return httpx.post(served["url"] + path, json=body, headers=headers, timeout=60)


def test_a_viewer_searches_with_citations_and_stage_scores(served: dict[str, Any]) -> None:
    body = {"query": "roll back an alias to the previous version", "k": 3}
    answer = _post(served, "/v1/rag/docs/search", body)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["version"] == 1 and found["collection"] == "docs"
    top = found["hits"][0]
    assert top["doc_id"] == "aliases.md"
    assert top["citation"]["source"] == "docs/aliases.md"
    assert 0 <= top["citation"]["start"] < top["citation"]["end"]
    assert {"dense", "bm25", "fused"} <= set(top["scores"])
    assert {"embed", "dense", "bm25", "total"} <= set(found["latency_ms"])
    assert found["cache_hit"] is False and found["warnings"] == []
    assert _post(served, "/v1/rag/docs/search", body).json()["cache_hit"] is True


def test_no_key_is_refused(served: dict[str, Any]) -> None:
    answer = _post(served, "/v1/rag/docs/search", {"query": "alias"}, key=None)
    assert answer.status_code == 401


def test_an_unknown_filter_field_is_a_422_naming_it(served: dict[str, Any]) -> None:
    body = {"query": "alias", "filters": {"colour": "red"}}
    answer = _post(served, "/v1/rag/docs/search", body)
    assert answer.status_code == 422
    assert "colour" in answer.text
    ok = _post(served, "/v1/rag/docs/search", {"query": "cache", "filters": {"author": "bo"}})
    assert ok.status_code == 200 and {h["metadata"]["author"] for h in ok.json()["hits"]} == {"bo"}


def test_a_query_over_the_token_limit_is_truncated_with_a_warning(served: dict[str, Any]) -> None:
    answer = _post(served, "/v1/rag/docs/search", {"query": "alias " * 600, "k": 2})
    assert answer.status_code == 200
    assert "truncated" in answer.json()["warnings"][0]


def test_context_is_packed_within_the_budget(served: dict[str, Any]) -> None:
    body = {"query": "how is the embedding cache keyed", "budget_tokens": 60}
    answer = _post(served, "/v1/rag/docs/context", body)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["context"]["tokens"] <= 60
    assert found["context"]["citations"] and "[1]" in found["context"]["text"]
    assert "pack" in found["latency_ms"]


def test_unknown_collection_and_bad_bodies(served: dict[str, Any]) -> None:
    assert _post(served, "/v1/rag/nope/search", {"query": "x"}).status_code == 404
    assert _post(served, "/v1/rag/docs/search", {"query": ""}).status_code == 422
    assert _post(served, "/v1/rag/docs/search", {"query": "x", "kk": 1}).status_code == 422
    assert _post(served, "/v1/rag/docs/search", {"query": "x", "version": 7}).status_code == 404


def test_metrics_have_a_histogram_per_stage(served: dict[str, Any]) -> None:
    _post(served, "/v1/rag/docs/search", {"query": "bm25 term frequency"})
    metrics = httpx.get(
        served["url"] + "/metrics",
        headers={"Authorization": f"Bearer {served['admin']}"},
        timeout=30,
    )
    assert metrics.status_code == 200
    text = metrics.text
    assert (
        'conveyor_rag_stage_seconds_count{collection="docs",endpoint="search",stage="dense"}'
        in text
    )
    assert 'conveyor_rag_queries_total{cache="miss",collection="docs",endpoint="search"}' in text


def test_a_search_is_an_event(served: dict[str, Any]) -> None:
    _post(served, "/v1/rag/docs/search", {"query": "events of a query", "k": 2})
    project = served["project"]
    project.events.flush()
    found = project.events.query(kind="rag.query", subject="docs", limit=100).items
    assert found
    last = found[-1].payload
    assert len(last["query_digest"]) == 64 and "events of a query" not in str(last)
    assert len(last["chunk_ids"]) == len(last["scores"]) <= 2
    assert "total" in last["latency_ms"]


def test_a_server_with_a_live_collection_and_no_model_is_ready(
    served: dict[str, Any], tmp_path: Path
) -> None:
    # This server has no model deployed, only the docs collection live: it answers, so it
    # is ready (a RAG-only deployment must pass its readiness probe).
    ready = httpx.get(served["url"] + "/v2/health/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True
    # Nothing deployed and no collection built: not ready, saying why.
    empty = make_project(tmp_path / "empty")
    running = ThreadedServer(create_app(empty))
    running.start()
    try:
        answer = httpx.get(running.url + "/v2/health/ready", timeout=30)
        assert answer.status_code == 503
        assert answer.json()["status"] == "empty"
    finally:
        running.stop()
        empty.close()
