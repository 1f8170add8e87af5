"""What the jobs tests share: a project whose queue has a name of its own, a server, workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from conveyor.jobs.queue import JobQueue
from conveyor.jobs.settings import JobsSpec
from conveyor.testing.wait import wait_until

NATS_URL = "nats://127.0.0.1:4222"
SECRET = "s3cret-for-tests"


#: The ``jobs:`` settings each queue's project was made with (but its URL): a JobQueue
#: declares its stream and consumer on connecting, and JetStream takes the last
#: declaration, so the tests' own queues must declare what the project did (a default
#: one set ack_wait back to 30 s under a test expecting redelivery after 2 s).
_SETTINGS: dict[str, dict[str, Any]] = {}


def unique_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def jobs_section(name: str, **fields: Any) -> str:
    """A ``jobs:`` section for conveyor.yaml (flow style, one line)."""
    values = {"url": NATS_URL, "name": name, "callback_secret": SECRET, **fields}
    inner = ", ".join(
        f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in values.items()
    )
    return "jobs: {" + inner + "}\n"


def make_project(
    root: Path, name: str, *, auth: bool = False, serving: str = "", **fields: Any
) -> Any:
    """A project at ``root`` with model ``m`` (y = a + b) routed to @1 and its queue named
    ``name``; the open Project. ``serving`` adds fields to the ``serving:`` section
    (``"dependencies: {reset_s: 5}"``)."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.project import Project, init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    init_project(root, name="jobs")
    _SETTINGS[name] = {k: v for k, v in fields.items() if k != "url"}
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(jobs_section(name, **fields))
        if not auth or serving:
            spec.write(
                "serving: {"
                + ", ".join(p for p in ("" if auth else "auth: disabled", serving) if p)
                + "}\n"
            )
    project = Project.open(root, env={})
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    project.registry.register("m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X)
    RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
    return project


def queue_of(name: str, **fields: Any) -> JobQueue:
    """A JobQueue on ``name`` with its project's settings (make_project), then ``fields``."""
    settings = {**_SETTINGS.get(name, {}), **fields}
    return JobQueue(JobsSpec(url=NATS_URL, name=name, callback_secret=SECRET, **settings))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def drop_queue(name: str) -> None:
    """Delete the stream and the bucket of ``name`` (after a test)."""

    async def drop() -> None:
        queue = queue_of(name)
        try:
            await queue.delete_all()
        finally:
            await queue.close()

    with contextlib.suppress(Exception):  # NATS down: nothing to delete
        run(drop())


def depth(name: str) -> dict[str, int]:
    async def read() -> dict[str, int]:
        queue = queue_of(name)
        try:
            return await queue.depth()
        finally:
            await queue.close()

    return run(read())  # type: ignore[no-any-return]


def start_worker(
    root: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """``conveyor jobs worker`` of the project at ``root`` in its own process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    environment.update(env or {})
    if log is None:
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor.cli", "jobs", "worker", "-C", str(root), *args],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor.cli", "jobs", "worker", "-C", str(root), *args],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def workers(
    root: Path, n: int = 1, *args: str, **kw: Any
) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [start_worker(root, *args, **kw) for _ in range(n)]
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_job(
    url: str, job_id: str, headers: dict[str, str] | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until the job is done or failed."""
    found: dict[str, Any] = {}

    def finished() -> bool:
        answer = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        found.update(answer.json())
        return found["status"] in ("done", "failed")

    wait_until(finished, timeout=timeout, message=f"job {job_id} finishes")
    return found
