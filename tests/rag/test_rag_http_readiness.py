"""The readiness probe of a server with RAG and no model (``Contribution.serves``): it answers
from what the process knows, read from the store at most once per ``rag.alias_poll_s`` and
never on the probe's own thread, so a probe costs no SQL and a hung store cannot hang it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from rag_collections_support import encoder, make_project

from conveyor.backends import BackendURL
from conveyor.rag.builder import build_collection
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.services import POSTGRES_URL, postgres_schema, require
from conveyor.testing.tcp_proxy import TcpProxy
from conveyor.testing.wait import wait_until


def _ready(url: str, timeout: float = 10) -> httpx.Response:
    return httpx.get(url + "/v2/health/ready", timeout=timeout)


@pytest.fixture
def statements() -> Iterator[tuple[list[str], Any]]:
    """The SQL statements a project's store runs that touch RAG's tables, once ``watch``ed."""
    seen: list[str] = []
    watched: list[Any] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "rag_" in statement:
            seen.append(statement)

    def watch(engine: Any) -> None:
        sa.event.listen(engine, "before_cursor_execute", count)
        watched.append(engine)

    yield seen, watch
    for engine in watched:
        sa.event.remove(engine, "before_cursor_execute", count)


def test_a_readiness_probe_runs_no_sql_while_the_answer_is_fresh(
    tmp_path: Path, statements: tuple[list[str], Any]
) -> None:
    seen, watch = statements
    with make_project(tmp_path, env={"CONVEYOR_RAG__ALIAS_POLL_S": "600"}) as project:
        build_collection(project, "docs", actor="ana", embedder=encoder())
        running = ThreadedServer(create_app(project))
        running.start()
        try:
            first = _ready(running.url)
            assert first.status_code == 200 and first.json()["ready"] is True, first.text
            watch(project.store.engine)
            probes = [_ready(running.url) for _ in range(5)]
            assert [p.status_code for p in probes] == [200] * 5
            # the store was read for the first probe; the next ones answer from memory
            assert seen == []
        finally:
            running.stop()


def test_a_collection_built_after_the_server_started_makes_it_ready(tmp_path: Path) -> None:
    with make_project(tmp_path, env={"CONVEYOR_RAG__ALIAS_POLL_S": "0"}) as project:
        running = ThreadedServer(create_app(project))
        running.start()
        try:
            empty = _ready(running.url)
            assert empty.status_code == 503 and empty.json()["status"] == "empty"
            build_collection(project, "docs", actor="ana", embedder=encoder())
            wait_until(
                lambda: _ready(running.url).status_code == 200,
                message="readiness to see the live collection",
                timeout=30,
            )
        finally:
            running.stop()


@pytest.fixture
def hung_store(tmp_path: Path) -> Iterator[tuple[str, TcpProxy]]:
    """A server whose store is the real PostgreSQL through a proxy, with docs live."""
    parsed = BackendURL.parse(POSTGRES_URL)
    require(parsed.host or "127.0.0.1", parsed.port or 5432, "PostgreSQL")
    with (
        TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432) as proxy,
        postgres_schema() as pg,
    ):
        store = BackendURL.parse(pg).with_(host="127.0.0.1", port=proxy.port)
        env = {
            "CONVEYOR_BACKENDS__STORE": store.render(hide_password=False),
            "CONVEYOR_RAG__ALIAS_POLL_S": "0",  # every probe finds its answer stale
        }
        with make_project(tmp_path, env=env) as project:
            build_collection(project, "docs", actor="ana", embedder=encoder())
            running = ThreadedServer(create_app(project))
            running.start()
            try:
                yield running.url, proxy
            finally:
                proxy.restore()
                running.stop()


def test_a_hung_store_does_not_hang_the_readiness_probe(
    hung_store: tuple[str, TcpProxy],
) -> None:
    url, proxy = hung_store
    assert _ready(url).json()["ready"] is True
    proxy.hang()
    # the store no longer answers: the probe still does, from the last answer it read
    # (it hung until the client gave up when it read the store itself)
    answers = [_ready(url, timeout=10) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3, answers[-1].text
    assert all(a.json()["ready"] is True for a in answers)


def test_every_background_re_read_runs_on_one_long_lived_thread() -> None:
    """A stale value is re-read by handing the read to a worker that is already running,
    not by starting a thread per read: ``Thread.start()`` makes the caller (the query that
    found the value stale) wait for the new thread's first turn at the GIL."""
    import threading

    from conveyor._daemon import DaemonWorker
    from conveyor.rag.api import _Polled

    readers: list[threading.Thread] = []
    reads = threading.Semaphore(0)

    def read() -> int:
        readers.append(threading.current_thread())
        reads.release()
        return len(readers)

    worker = DaemonWorker("test-alias")
    polled = _Polled(read, 0.0, name="test-alias", worker=worker)
    assert polled.get() == 1  # the first read, on the caller's thread
    for _ in range(4):  # each get finds the value stale (ttl 0) and starts a re-read
        polled.get()
        assert reads.acquire(timeout=30)
        wait_until(lambda: polled._reading is None, message="the re-read to end", timeout=30)
    worker.close()
    background = readers[1:]
    assert len(background) == 4
    assert len({id(t) for t in background}) == 1
    assert background[0] is not threading.current_thread()
