"""NATS cut (refused) and hung (SIGSTOP) behind a real TCP proxy in front of the real NATS:
``?mode=async`` fails fast with 503 ``backend_unavailable`` and ``Retry-After`` once the
server's ``jobs`` breaker opens (no wait on NATS at all), synchronous predictions still
answer, and submissions are accepted again by themselves when NATS is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobs_support import depth, drop_queue, make_project, unique_name

from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.services import require
from conveyor.testing.tcp_proxy import TcpProxy
from conveyor.testing.wait import wait_until

ROWS = {"records": [{"a": 1.0, "b": 2.0}]}


@pytest.fixture
def through_proxy(tmp_path: Path) -> Iterator[tuple[str, TcpProxy, str]]:
    """A server whose job queue is the real NATS through a proxy: its URL, the proxy and
    the queue's name."""
    require("127.0.0.1", 4222, "NATS")
    name = unique_name()
    with TcpProxy("127.0.0.1", 4222) as proxy:
        # The breaker's first trial 5 s after it opens: the checks made while it is open
        # meet no trial call, even on a loaded machine.
        project = make_project(
            tmp_path,
            name,
            serving="dependencies: {reset_s: 5}",
            url=f"nats://127.0.0.1:{proxy.port}",
            submit_timeout_s=0.5,
        )
        try:
            with ThreadedServer(create_app(project)) as server:
                yield server.url, proxy, name
        finally:
            proxy.restore()
            project.close()
            drop_queue(name)


def _submit(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/m/predict?mode=async", json=ROWS, timeout=30)


def _gauge(url: str) -> str:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith('conveyor_dependency_degraded{dependency="jobs"}'):
            return line.split()[-1]
    return "absent"


@pytest.mark.parametrize("failure", ["refuse", "hang"])
def test_nats_down_fails_fast_with_503_and_recovers(
    through_proxy: tuple[str, TcpProxy, str], failure: str
) -> None:
    url, proxy, name = through_proxy
    first = _submit(url)
    assert first.status_code == 202, first.text
    getattr(proxy, failure)()

    refused: list[dict[str, Any]] = []

    def bypassed() -> bool:
        answer = _submit(url)
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["retry-after"]) >= 1
        refused.append(answer.json())
        return bool(answer.json()["reason"] == "degraded")

    wait_until(bypassed, message="the jobs breaker opens", timeout=30)
    # The failures that opened it waited for NATS (a timeout, or the connection refused);
    # from then on no request waits: the breaker answers.
    assert all(r["code"] == "backend_unavailable" and r["seam"] == "jobs" for r in refused)
    assert {r["reason"] for r in refused[:-1]} <= {"timeout", "unreachable"}
    assert "127.0.0.1" not in str(refused)  # where NATS lives is the operator's business
    assert _gauge(url) == "1.0"
    ready = httpx.get(f"{url}/v2/health/ready", timeout=10).json()
    assert ready["dependencies"]["jobs"]["state"] in ("open", "half_open")
    # Synchronous predictions do not need the queue.
    sync = httpx.post(f"{url}/v1/models/m/predict", json=ROWS, timeout=10)
    assert sync.status_code == 200, sync.text
    # A job read goes through the same breaker: refused at once too.
    job = first.json()["job_id"]
    read = httpx.get(f"{url}/v1/jobs/{job}", timeout=30)
    assert read.status_code == 503 and read.json()["reason"] == "degraded"

    proxy.restore()

    def accepted() -> bool:
        answer = _submit(url)
        assert answer.status_code in (202, 503), answer.text
        return answer.status_code == 202

    wait_until(accepted, message="submissions are accepted again", timeout=60)
    assert _gauge(url) == "0.0"
    found = httpx.get(f"{url}/v1/jobs/{job}", timeout=10)
    assert found.status_code == 200 and found.json()["status"] == "queued"
    # The refused submissions left nothing to score: the first and the last are queued.
    assert depth(name)["queued"] == 2


def test_a_server_stops_while_nats_hangs(tmp_path: Path) -> None:
    """Its queue's connection is closed without waiting on NATS for ever (nats-py's drain held
    the stop 12-20 s): the server's shut-down ends well within ThreadedServer's bound."""
    require("127.0.0.1", 4222, "NATS")
    name = unique_name()
    with TcpProxy("127.0.0.1", 4222) as proxy:
        project = make_project(tmp_path, name, url=f"nats://127.0.0.1:{proxy.port}")
        try:
            server = ThreadedServer(create_app(project)).start()
            assert _submit(server.url).status_code == 202  # the queue's connection is up
            proxy.hang()
            server.stop(timeout_s=10)  # raises if the shut-down is still running
        finally:
            proxy.restore()
            project.close()
            drop_queue(name)
