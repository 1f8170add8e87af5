"""``?mode=async`` on a real uvicorn server, jobs scored by real worker processes, on the
real NATS of 127.0.0.1:4222 (a queue of its own per test, deleted after)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobs_support import depth, drop_queue, make_project, unique_name, wait_job, workers

from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer

ROWS = {"records": [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]}


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = unique_name()
    yield name
    drop_queue(name)


@pytest.fixture
def served(tmp_path: Path, queue_name: str) -> Iterator[dict[str, Any]]:
    project = make_project(tmp_path, queue_name, ack_wait_s=5)
    with ThreadedServer(create_app(project)) as server:
        yield {"url": server.url, "root": tmp_path, "name": queue_name, "project": project}
    project.close()


def test_an_async_request_is_accepted_at_once_and_scored_by_a_worker(
    served: dict[str, Any],
) -> None:
    url = served["url"]
    sync = httpx.post(f"{url}/v1/models/m/predict", json=ROWS, timeout=10).json()
    answer = httpx.post(f"{url}/v1/models/m/predict?mode=async", json=ROWS, timeout=10)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['job_id']}" == job["location"]
    queued = httpx.get(f"{url}{job['location']}", timeout=10).json()
    assert queued["status"] == "queued" and queued["result"] is None
    assert depth(served["name"])["queued"] == 1  # nothing scores it yet: no worker

    with workers(served["root"]):
        done = wait_job(url, job["job_id"])
    assert done["status"] == "done", done
    assert done["result"]["predictions"] == pytest.approx(sync["predictions"])
    assert done["result"]["version"] == 1 and done["result"]["arm"] == sync["arm"]
    assert done["attempts"] == 1
    timing = done["timing"]
    assert timing["queued_ms"] >= 0 and timing["run_ms"] >= 0 and timing["total_ms"] > 0
    assert depth(served["name"])["queued"] == 0  # acknowledged once stored


def test_the_worker_writes_the_prediction_event_with_the_jobs_request_id(
    served: dict[str, Any],
) -> None:
    url = served["url"]
    job = httpx.post(
        f"{url}/v1/models/m/predict?mode=async",
        json=ROWS,
        headers={"x-request-id": "req-async-1"},
        timeout=10,
    ).json()
    with workers(served["root"]):
        wait_job(url, job["job_id"])
    project = served["project"]
    project.events.flush()
    kinds = [e.kind for e in project.events.query(request_id="req-async-1")]
    assert "job.accepted" in kinds and "prediction" in kinds and "job.finished" in kinds


def test_open_inference_protocol_v2_takes_a_parameter(served: dict[str, Any]) -> None:
    url = served["url"]
    body = {
        "inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}],
        "parameters": {"mode": "async"},
    }
    answer = httpx.post(f"{url}/v2/models/m/infer", json=body, timeout=10)
    assert answer.status_code == 202, answer.text
    with workers(served["root"]):
        done = wait_job(url, answer.json()["job_id"])
    assert done["status"] == "done", done
    (output,) = done["result"]["outputs"]
    assert output["data"] == pytest.approx([3.0, 7.0])


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/models/nope/predict?mode=async", ROWS, 404, "not_found"),
        ("/v1/models/m/predict?mode=async", b"{not json", 400, "invalid_input"),
        ("/v1/models/m/predict?mode=async", {"records": [{"a": 1.0}]}, 422, "invalid_input"),
        ("/v1/models/m/predict?mode=async", {"records": [{"a": "x", "b": 1.0}]}, 422, None),
        ("/v1/models/m/predict?mode=later", ROWS, 422, "invalid_input"),
        (
            "/v1/models/m/predict?mode=async&callback_url=ftp://example.org/x",
            ROWS,
            422,
            "invalid_input",
        ),
        ("/v2/models/nope/infer?mode=async", {"inputs": []}, 404, "not_found"),
    ],
)
def test_bad_requests_are_refused_at_submission_and_nothing_is_queued(
    served: dict[str, Any], path: str, body: Any, status: int, code: str | None
) -> None:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    answer = httpx.post(
        f"{served['url']}{path}",
        content=content,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == status, answer.text
    if code is not None:
        assert answer.json()["code"] == code
    assert depth(served["name"])["queued"] == 0


@pytest.mark.parametrize("job_id", ["0123456789abcdef0123456789abcdef", "x", "%C2%BA%23%F1%A2"])
def test_an_unknown_or_malformed_job_id_is_404(served: dict[str, Any], job_id: str) -> None:
    # (schemathesis found a malformed id answered 503: NATS refused the key)
    answer = httpx.get(f"{served['url']}/v1/jobs/{job_id}", timeout=10)
    assert answer.status_code == 404 and answer.json()["code"] == "not_found"


def test_a_full_queue_refuses_with_retry_after(tmp_path: Path, queue_name: str) -> None:
    project = make_project(tmp_path, queue_name, max_queued=2)
    with ThreadedServer(create_app(project)) as server:
        answers = [
            httpx.post(f"{server.url}/v1/models/m/predict?mode=async", json=ROWS, timeout=10)
            for _ in range(3)
        ]
    project.close()
    assert [a.status_code for a in answers] == [202, 202, 503]
    assert answers[2].json()["code"] == "throttled" and "retry-after" in answers[2].headers
    assert depth(queue_name)["queued"] == 2
    # The refused request left no job behind: its record was taken back.
    assert "maximum of 2" in answers[2].json()["message"]
