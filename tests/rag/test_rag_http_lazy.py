"""A server whose spec declares no RAG collection (a server of models only) builds the RAG
query service at the first RAG request, not at start-up: its modules stay out of the
start-up, the request is still answered as before (a 404 naming the collection), and
readiness does not count on a collection."""

from __future__ import annotations

from pathlib import Path

from conveyor.project import init_project
from fresh_app_support import run_fresh_app

LAZY = """
print("ready", client.get("/v2/health/ready").status_code)
print("rag after start-up", "conveyor.rag.api" in sys.modules)
found = client.post("/v1/rag/docs/search", json={"query": "keys"}, headers=auth)
print("search", found.status_code, found.json()["code"])
print("names it", "docs" in found.json()["message"])
print("rag after a search", "conveyor.rag.api" in sys.modules)
print("ready again", client.get("/v2/health/ready").status_code)
"""


def test_a_spec_without_collections_builds_the_rag_service_at_its_first_request(
    tmp_path: Path,
) -> None:
    init_project(tmp_path, name="norag")
    out = run_fresh_app(tmp_path, LAZY, role="viewer")
    assert "ready 503" in out  # nothing deployed, no collection: not ready
    assert "rag after start-up False" in out
    assert "search 404 not_found" in out and "names it True" in out, out
    assert "rag after a search True" in out
    assert "ready again 503" in out and "stopped cleanly" in out
