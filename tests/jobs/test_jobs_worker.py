"""Workers as real processes: kill -9 one mid-queue and nothing is lost or stored twice;
two share one queue; a stale write loses the compare-and-set."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from jobs_models import SlowSum
from jobs_support import (
    depth,
    drop_queue,
    make_project,
    queue_of,
    run,
    start_worker,
    unique_name,
    workers,
)

from conveyor.errors import ConflictError
from conveyor.jobs.queue import Submission
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until

HERE = Path(__file__).parent
WORKER_ENV = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = unique_name()
    yield name
    drop_queue(name)


@pytest.fixture
def slow(tmp_path: Path, queue_name: str) -> Iterator[dict[str, Any]]:
    """A server whose model ``slow`` sums a row in 50 ms a call; jobs redelivered after 2 s."""
    project = make_project(tmp_path, queue_name, ack_wait_s=2)
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 2.0]})
    project.registry.register("slow", SlowSum(0.05), signature_from=X)
    RouteStore(project.store, project.events, project.registry).set("slow", RoutePolicy.fixed(1))
    with ThreadedServer(create_app(project)) as server:
        yield {"url": server.url, "root": tmp_path, "name": queue_name, "project": project}
    project.close()


def _submit(url: str, n: int) -> list[str]:
    with httpx.Client(base_url=url, timeout=10) as client:
        ids = []
        for i in range(n):
            answer = client.post(
                "/v1/models/slow/predict?mode=async", json={"records": [{"a": float(i), "b": 0.0}]}
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["job_id"])
    return ids


def _jobs(url: str, ids: list[str]) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url, timeout=10) as client:
        return [client.get(f"/v1/jobs/{job_id}").json() for job_id in ids]


def test_a_worker_killed_mid_queue_loses_nothing_and_stores_nothing_twice(
    slow: dict[str, Any],
) -> None:
    url, root, name = slow["url"], slow["root"], slow["name"]
    n = 120
    ids = _submit(url, n)
    assert depth(name)["queued"] == n
    first = start_worker(root, "--concurrency", "2", env=WORKER_ENV)
    try:
        # Some done, most not: then the worker dies with jobs in hand.
        wait_until(lambda: depth(name)["queued"] <= n - 20, timeout=60, message="20 jobs done")
        in_hand = depth(name)["in_flight"]
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    left = depth(name)["queued"]
    assert 0 < left < n
    with workers(root, 1, "--concurrency", "4", env=WORKER_ENV):
        wait_until(lambda: depth(name)["queued"] == 0, timeout=90, message="the queue drains")
    jobs = _jobs(url, ids)
    assert [j["status"] for j in jobs] == ["done"] * n
    # Each job's one visible result is its own row's: a + b = i.
    assert [j["result"]["predictions"] for j in jobs] == [[float(i)] for i in range(n)]
    # The jobs the dead worker held were delivered again and finished by the second.
    redelivered = [j for j in jobs if j["attempts"] >= 2]
    assert in_hand > 0 and redelivered, in_hand
    workers_seen = {j["worker"] for j in jobs}
    assert len(workers_seen) == 2
    project = slow["project"]
    project.events.flush()
    finished = [e.payload["job_id"] for e in project.events.query(kind="job.finished", limit=1000)]
    assert len(finished) == len(set(finished))  # never stored twice


def test_two_workers_share_one_queue(slow: dict[str, Any]) -> None:
    url, root, name = slow["url"], slow["root"], slow["name"]
    ids = _submit(url, 40)
    started = time.monotonic()
    with workers(root, 2, "--concurrency", "2", env=WORKER_ENV):
        wait_until(lambda: depth(name)["queued"] == 0, timeout=90, message="the queue drains")
    assert time.monotonic() - started > 0  # (timing is the benchmark's business)
    jobs = _jobs(url, ids)
    assert all(j["status"] == "done" for j in jobs)
    assert len({j["worker"] for j in jobs}) == 2  # each took a share


def test_a_stale_revision_loses_the_compare_and_set(queue_name: str) -> None:
    async def scenario() -> None:
        queue = queue_of(queue_name)
        try:
            job = Submission(model="m", version=None, protocol="native", owner="anonymous")
            await queue.submit(job, b'{"records": [{"a": 1}]}')
            record, revision = await queue.get(job.id)
            record["status"] = "running"
            await queue.update(record, revision)
            record["status"] = "done"
            with pytest.raises(ConflictError):
                await queue.update(record, revision)  # another delivery moved it first
            found, _ = await queue.get(job.id)
            assert found["status"] == "running"
        finally:
            await queue.close()

    run(scenario())
