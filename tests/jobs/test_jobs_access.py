"""Who may submit and read jobs (keys and roles), an unreachable broker, the depth metric,
and the CLI: against real NATS and a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobs_support import drop_queue, make_project, run, unique_name, wait_job, workers

from cli_support import conveyor
from conveyor.errors import BackendUnavailableError
from conveyor.governance.keys import ApiKeys
from conveyor.jobs.queue import JobQueue, Submission
from conveyor.jobs.settings import JobsSpec
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.ports import worker_port
from conveyor.testing.wait import wait_until

ROWS = {"records": [{"a": 1.0, "b": 2.0}]}


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = unique_name()
    yield name
    drop_queue(name)


@pytest.fixture
def keyed(tmp_path: Path, queue_name: str) -> Iterator[dict[str, Any]]:
    project = make_project(tmp_path, queue_name, auth=True)
    keys = ApiKeys(project.store, project.events)
    tokens = {
        name: keys.create(name, role)[0]
        for name, role in [
            ("alice", "predictor"),
            ("bob", "predictor"),
            ("root", "admin"),
            ("watcher", "viewer"),
            ("worker", "deployer"),
        ]
    }
    with ThreadedServer(create_app(project)) as server:
        yield {"url": server.url, "root": tmp_path, "tokens": tokens, "project": project}
    project.close()


def _as(tokens: dict[str, str], name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens[name]}"}


def test_only_the_submitting_key_or_an_admin_reads_a_job(keyed: dict[str, Any]) -> None:
    url, tokens = keyed["url"], keyed["tokens"]
    answer = httpx.post(
        f"{url}/v1/models/m/predict?mode=async", json=ROWS, headers=_as(tokens, "alice"), timeout=10
    )
    assert answer.status_code == 202, answer.text
    location = answer.json()["location"]
    mine = httpx.get(f"{url}{location}", headers=_as(tokens, "alice"), timeout=10)
    assert mine.status_code == 200 and mine.json()["owner"] == "key:alice"
    theirs = httpx.get(f"{url}{location}", headers=_as(tokens, "bob"), timeout=10)
    assert theirs.status_code == 403 and theirs.json()["code"] == "forbidden"
    assert "result" not in theirs.json()
    admin = httpx.get(f"{url}{location}", headers=_as(tokens, "root"), timeout=10)
    assert admin.status_code == 200
    nobody = httpx.get(f"{url}{location}", timeout=10)
    assert nobody.status_code == 401
    # The worker scores it as alice: the prediction event's actor is her key.
    with workers(keyed["root"], env={"CONVEYOR_API_KEY": tokens["worker"]}):
        done = wait_job(url, answer.json()["job_id"], headers=_as(tokens, "alice"))
    assert done["status"] == "done"
    project = keyed["project"]
    project.events.flush()
    (event,) = project.events.query(kind="prediction", request_id=done["request_id"])
    assert event.actor == "key:alice"


def test_a_viewer_cannot_submit(keyed: dict[str, Any]) -> None:
    answer = httpx.post(
        f"{keyed['url']}/v1/models/m/predict?mode=async",
        json=ROWS,
        headers=_as(keyed["tokens"], "watcher"),
        timeout=10,
    )
    assert answer.status_code == 403


def test_an_unreachable_broker_is_a_503_with_a_stable_code(tmp_path: Path) -> None:
    port = worker_port()  # nothing listens
    project = make_project(tmp_path, unique_name(), url=f"nats://127.0.0.1:{port}")
    with ThreadedServer(create_app(project)) as server:
        answer = httpx.post(f"{server.url}/v1/models/m/predict?mode=async", json=ROWS, timeout=30)
        sync = httpx.post(f"{server.url}/v1/models/m/predict", json=ROWS, timeout=10)
    project.close()
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "backend_unavailable" and answer.json()["seam"] == "jobs"
    assert str(port) not in answer.text  # where it lives is in the server's log, not the answer
    assert sync.status_code == 200  # synchronous predictions do not need the broker

    async def submit() -> None:
        queue = JobQueue(JobsSpec(url=f"nats://127.0.0.1:{port}"))
        try:
            await queue.submit(Submission("m", None, "native", "anonymous"), b"{}")
        finally:
            await queue.close()

    with pytest.raises(BackendUnavailableError) as caught:
        run(submit())
    assert f"nats://127.0.0.1:{port}" in caught.value.message


def test_the_queue_depth_is_a_prometheus_metric(tmp_path: Path, queue_name: str) -> None:
    project = make_project(tmp_path, queue_name)
    with ThreadedServer(create_app(project)) as server:
        for _ in range(3):
            answer = httpx.post(
                f"{server.url}/v1/models/m/predict?mode=async", json=ROWS, timeout=10
            )
            assert answer.status_code == 202

        def scraped() -> str | None:
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            return text if 'conveyor_jobs_queue_depth{state="queued"} 3.0' in text else None

        text = wait_until(scraped, timeout=20, message="the depth reaches /metrics")
    project.close()
    assert 'conveyor_jobs_queue_depth{state="pending"} 3.0' in text


def _cli(root: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    if token is not None:
        env["CONVEYOR_API_KEY"] = token
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args, "-C", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _in_process(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (cli_support): no process start for each poll."""
    return conveyor(*args, "-C", str(root))


def test_the_cli_submits_reads_and_shows_the_depth(tmp_path: Path, queue_name: str) -> None:
    project = make_project(tmp_path, queue_name)
    project.close()
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"records": [{"a": 2.0, "b": 5.0}]}))
    # The submission as a user makes it (its own process); the rest in process.
    submitted = _cli(tmp_path, "jobs", "submit", "m", "--data", str(rows), "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    status = _in_process(tmp_path, "jobs", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queued"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"records": [{"a": 2.0}]}))
    refused = _in_process(tmp_path, "jobs", "submit", "m", "--data", str(bad))
    assert refused.returncode == 1 and "'b' is missing" in refused.stderr
    unknown = _in_process(tmp_path, "jobs", "submit", "nope", "--data", str(rows))
    assert unknown.returncode == 1
    with workers(tmp_path):

        def done() -> dict[str, Any] | None:
            got = _in_process(tmp_path, "jobs", "get", job_id, "--json")
            assert got.returncode == 0, got.stderr
            job = json.loads(got.stdout)
            return job if job["status"] == "done" else None

        job = wait_until(done, timeout=60, message="the job is done")
    assert job["result"]["predictions"] == pytest.approx([7.0])
    assert json.loads(_in_process(tmp_path, "jobs", "status", "--json").stdout)["queued"] == 0
