"""A lone search on a loaded version is answered on the server's event loop (no hop to a
thread and back); one that may wait on I/O (the version's first load, a Redis retrieval
cache) or that has company is answered on a thread, as before."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rag_collections_support import encoder, make_project

import conveyor.rag.api as rag_api
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project
from conveyor.rag.api import RagService
from conveyor.rag.builder import build_collection
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with make_project(tmp_path) as proj:
        build_collection(proj, "docs", actor="ana", embedder=encoder())
        yield proj


def test_a_lone_search_on_a_loaded_version_runs_on_the_event_loop(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int | None] = []
    real = rag_api.run_search

    def watched(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(rag_api, "run_search", watched)
    viewer, _ = ApiKeys(project.store, project.events).create("viewer", "viewer")
    headers = {"Authorization": f"Bearer {viewer}"}
    # the server's own HTTP protocol (header deadline on) counts the requests in flight
    with ThreadedServer(create_app(project), header_timeout_s=10) as running:
        loop_thread = running.thread.ident

        def search(query: str, **extra: Any) -> dict[str, Any]:
            answer = httpx.post(
                f"{running.url}/v1/rag/docs/search",
                json={"query": query, "k": 2, **extra},
                headers=headers,
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            found: dict[str, Any] = answer.json()
            return found

        # the version is loaded by the first query: that one waits on a thread
        search("roll back an alias")
        assert threads[-1] != loop_thread
        # loaded, resolved, the cache in memory, alone: on the loop, the same answer
        on_loop = search("embedding cache keyed by model")
        assert threads[-1] == loop_thread
        assert on_loop["hits"] and on_loop["hits"][0]["doc_id"] == "cache.md"
        # a version named by number is resolved once (on a thread), then on the loop too
        calls = len(threads)
        search("erase a customer's orders", version=1)
        assert len(threads) == calls + 1 and threads[-1] != loop_thread
        search("term frequency inverse document frequency", version=1)
        assert threads[-1] == loop_thread


def test_only_a_query_with_nothing_to_wait_on_is_answered_in_memory(
    project: Project, tmp_path: Path
) -> None:
    service = RagService(project)
    try:
        # nothing resolved or loaded yet
        assert not service.answers_in_memory("docs")
        service.search("docs", "alias", k=1)
        assert service.answers_in_memory("docs")
        assert service.answers_in_memory("docs", "live")
        assert not service.answers_in_memory("docs", 1)  # not resolved under that name yet
        assert not service.answers_in_memory("nope")
    finally:
        service.close()
    # a retrieval cache in Redis is I/O: never answered on the loop
    other = tmp_path / "redis"
    make_project(other).close()
    spec = other / "conveyor.yaml"
    text, found = re.subn(
        r"(?m)^  cache: .*$",
        "  cache: 'redis://127.0.0.1:6379/0?prefix=rag-inline:'",
        spec.read_text(),
    )
    assert found == 1
    spec.write_text(text)
    with Project.open(other, env={}) as proj:
        assert not getattr(proj.cache, "local", True)
        build_collection(proj, "docs", embedder=encoder())
        service = RagService(proj)
        try:
            service.search("docs", "alias", k=1)
            assert not service.answers_in_memory("docs")
        finally:
            service.close()


def test_a_lone_search_measured_slow_never_holds_the_event_loop(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version whose searches take longer than ``rag.inline_max_ms`` (a reranker, a huge
    k) is searched on a thread however alone its query is: a probe or a prediction arriving
    meanwhile would otherwise wait for the whole search."""
    import time

    threads: list[int | None] = []
    real = rag_api.run_search

    def slow(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        time.sleep(0.05)  # 50 ms a search, over the 20 ms default bound
        return real(*args, **kwargs)

    monkeypatch.setattr(rag_api, "run_search", slow)
    viewer, _ = ApiKeys(project.store, project.events).create("viewer", "viewer")
    with ThreadedServer(create_app(project), header_timeout_s=10) as running:
        for query in ("roll back an alias", "embedding cache", "term frequency", "erase"):
            answer = httpx.post(
                f"{running.url}/v1/rag/docs/search",
                json={"query": query, "k": 2},
                headers={"Authorization": f"Bearer {viewer}"},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
        assert len(threads) == 4
        assert running.thread.ident not in threads
