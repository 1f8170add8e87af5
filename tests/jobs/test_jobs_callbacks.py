"""Callbacks: signed, retried with backoff against a real receiver that fails then recovers,
given up on (and recorded) when it never does, and a breaker per target."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobs_support import SECRET, drop_queue, make_project, run, unique_name, workers

from conveyor.jobs.callbacks import Callbacks, sign, verify
from conveyor.jobs.settings import JobsSpec
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.http import Reply, Request, serve
from conveyor.testing.ports import worker_port

ROWS = {"records": [{"a": 1.0, "b": 2.0}]}


def receiver_verifies(secret: bytes, body: bytes, header: str) -> bool:
    """The verification docs/jobs.md shows a receiver, in the standard library only."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    if abs(time.time() - int(fields["t"])) > 300:
        return False
    mac = hmac.new(secret, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, fields["v1"])


def test_a_signature_verifies_and_a_changed_body_or_an_old_one_does_not() -> None:
    now = int(time.time())
    header = sign(b"k", b'{"a":1}', now)
    assert verify(b"k", b'{"a":1}', header)
    assert receiver_verifies(b"k", b'{"a":1}', header)
    assert not verify(b"k", b'{"a":2}', header)
    assert not verify(b"other", b'{"a":1}', header)
    assert not verify(b"k", b'{"a":1}', sign(b"k", b'{"a":1}', now - 3600))
    assert not verify(b"k", b'{"a":1}', "garbage")


def test_the_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    callbacks = Callbacks(JobsSpec(callback_backoff_s=1.0, callback_max_backoff_s=8.0))
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [callbacks.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not fixed


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = unique_name()
    yield name
    drop_queue(name)


def test_a_callback_is_retried_until_the_receiver_recovers_and_is_signed(
    tmp_path: Path, queue_name: str
) -> None:
    failures_left = [3]
    lock = threading.Lock()

    def hook(request: Request) -> Reply:
        with lock:
            if failures_left[0] > 0:
                failures_left[0] -= 1
                return Reply.text("down", status=503)
        return Reply.json({"ok": True})

    project = make_project(tmp_path, queue_name, callback_backoff_s=0.05)
    with (
        serve({"/hook": hook}) as receiver,
        ThreadedServer(create_app(project)) as server,
        workers(tmp_path, log=tmp_path / "worker.log"),
    ):
        answer = httpx.post(
            f"{server.url}/v1/models/m/predict?mode=async",
            json={**ROWS, "callback_url": receiver.url("/hook")},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]

        def delivered() -> dict[str, Any] | None:
            job = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()
            return job if (job.get("callback") or {}).get("status") == "delivered" else None

        from conveyor.testing.wait import wait_until

        job = wait_until(delivered, timeout=60, message="the callback is delivered")
    project.close()
    # Three failures open the target's breaker: an attempt may be short-circuited (counted,
    # not sent) until its trial, which the recovered receiver takes.
    assert job["status"] == "done" and 4 <= job["callback"]["attempts"] <= 6
    assert job["callback"]["last_error"].startswith(("HTTP 503", "circuit open"))
    calls = receiver.requests_to("/hook")
    assert len(calls) == 4
    last = calls[-1]
    assert last.header("x-conveyor-job") == job_id
    assert receiver_verifies(SECRET.encode(), last.body, last.header("x-conveyor-signature") or "")
    sent = httpx.Response(200, content=last.body).json()
    assert sent["id"] == job_id and sent["status"] == "done"
    assert sent["result"]["predictions"] == pytest.approx([3.0])
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.025 and gaps[2] >= 0.1  # 0.05 doubling, half of it at least


def test_a_callback_given_up_on_is_recorded_on_the_job(tmp_path: Path, queue_name: str) -> None:
    def hook(request: Request) -> Reply:
        return Reply.text("broken", status=500)

    project = make_project(tmp_path, queue_name, callback_backoff_s=0.02, callback_attempts=3)
    with (
        serve({"/hook": hook}) as receiver,
        ThreadedServer(create_app(project)) as server,
        workers(tmp_path, log=tmp_path / "worker.log"),
    ):
        job_id = httpx.post(
            f"{server.url}/v1/models/m/predict?mode=async&callback_url={receiver.url('/hook')}",
            json=ROWS,
            timeout=10,
        ).json()["job_id"]

        from conveyor.testing.wait import wait_until

        def gave_up() -> dict[str, Any] | None:
            job = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()
            return job if (job.get("callback") or {}).get("status") == "gave_up" else None

        job = wait_until(gave_up, timeout=60, message="the callback is given up on")
        assert job["status"] == "done"  # the result is there to poll all the same
        assert job["callback"]["attempts"] == 3 and job["callback"]["last_error"] == "HTTP 500"
        assert len(receiver.requests_to("/hook")) == 3
    project.events.flush()
    kinds = [(e.kind, e.payload.get("status")) for e in project.events.query(kind="job.callback")]
    assert kinds == [("job.callback", "gave_up")]
    project.close()


def test_a_dead_target_opens_its_breaker_so_jobs_stop_calling_it() -> None:
    port = worker_port()  # nothing listens
    spec = JobsSpec(
        callback_secret=SECRET,
        callback_attempts=4,
        callback_backoff_s=0.01,
        callback_max_backoff_s=0.02,
    )
    callbacks = Callbacks(spec)
    records = [
        {
            "id": f"j{i}",
            "status": "done",
            "model": "m",
            "callback": {
                "url": f"http://127.0.0.1:{port}/hook",
                "status": "pending",
                "attempts": 0,
            },
        }
        for i in range(10)
    ]

    async def deliver_all() -> list[dict[str, Any]]:
        import asyncio

        try:
            return list(await asyncio.gather(*(callbacks.deliver(r) for r in records)))
        finally:
            await callbacks.close()

    states = run(deliver_all())
    assert [s["status"] for s in states] == ["gave_up"] * 10
    assert all(s["attempts"] == 4 for s in states)
    # 40 attempts in all; the breaker let only the first failures (and no trial: its reset
    # is longer than the retries) reach the closed port.
    assert callbacks.sent < 20, callbacks.sent
    breaker = callbacks.breaker(f"http://127.0.0.1:{port}/other")
    assert breaker.state == "open" and breaker.short_circuited > 0
    assert any("circuit open" in (s["last_error"] or "") for s in states)


def test_a_callback_url_needs_a_secret_and_an_http_url(tmp_path: Path, queue_name: str) -> None:
    project = make_project(tmp_path, queue_name)
    (tmp_path / "conveyor.yaml").write_text(
        (tmp_path / "conveyor.yaml").read_text().replace(f", callback_secret: '{SECRET}'", "")
    )
    project.close()
    from conveyor.project import Project

    project = Project.open(tmp_path, env={})
    with ThreadedServer(create_app(project)) as server:
        answer = httpx.post(
            f"{server.url}/v1/models/m/predict?mode=async",
            json={**ROWS, "callback_url": "http://127.0.0.1:9/x"},
            timeout=10,
        )
    project.close()
    assert answer.status_code == 422
    assert answer.json()["field"] == "callback_url"
    assert "callback_secret" in answer.json()["message"]
