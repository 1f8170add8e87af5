"""``conveyor serve`` drains on SIGTERM (``serving.drain``), single process and ``--workers 2``:
readiness fails at once, the requests in flight at the signal are all answered, a new
connection is still accepted during the drain window, and the process exits 0 within the
drain's bound. (A stop that hangs on a dead service: test_serve_stop_bounded.py.)"""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from serving_support import SlowMarked, conveyor_serve, linear_project

from conveyor.testing.wait import wait_until

ROW = {"records": [{"a": 1.0, "b": 2.0}]}
#: Readiness fails 4 s before the server may stop (a balancer's detection time; long enough
#: for the checks made in the window on a loaded machine), a quiet 0.3 s ends the window, and
#: a stop takes at most 6 + 20 s plus the shut-down's 10 s.
DRAIN = (
    "{auth: disabled, poll_interval_s: 0.2, batching: {max_batch_size: 1}, "
    "drain: {min_s: 4, quiet_s: 0.3, max_s: 6, graceful_s: 20, shutdown_s: 10}}"
)
BOUND_S = 6 + 20 + 10 + 15  # the drain's bound, plus start-up slack for a loaded machine


def _slow_project(root: Path, calls: Path) -> None:
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    project = linear_project(root, name="drain", serving=DRAIN)
    try:
        import pandas as pd

        frame = pd.DataFrame({"a": [1.0], "b": [2.0]})
        version = project.registry.register(
            "slow", SlowMarked(1.5, str(calls)), signature_from=frame
        )
        RouteStore(project.store, project.events, project.registry).set(
            "slow", RoutePolicy.fixed(version.number)
        )
    finally:
        project.close()


def _serve(root: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    process, port = conveyor_serve(root, "--workers", str(workers), "-C", str(root), env=env)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, "conveyor serve exited"
        try:
            return httpx.get(f"{url}/v2/models/slow/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, message="conveyor serve is ready", timeout=90)
    return process, url


def _ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/v2/health/ready", timeout=5)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_every_request_in_flight_then_exits_0(tmp_path: Path, workers: int) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    _slow_project(tmp_path / "project", calls)
    process, url = _serve(tmp_path / "project", workers)
    answers: list[int] = []
    started = threading.Barrier(5)

    def call() -> None:
        # One connection per request: each is a request in flight of its own.
        started.wait()
        with httpx.Client(timeout=60) as client:
            answers.append(client.post(f"{url}/v1/models/slow/predict", json=ROW).status_code)

    try:
        callers = [threading.Thread(target=call) for _ in range(4)]
        for caller in callers:
            caller.start()
        started.wait()
        # A call takes 1.5 s: once the model began one, the requests are in flight.
        wait_until(lambda: any(calls.iterdir()), message="the model is called", timeout=30)
        process.send_signal(signal.SIGTERM)
        in_flight = 4 - len(answers)
        assert in_flight > 0

        def draining() -> bool:
            answer = _ready(url)
            return answer.status_code == 503 and answer.json()["status"] == "draining"

        wait_until(draining, message="readiness fails once SIGTERM is received", timeout=10)
        # Still serving during the window (min_s): a new connection gets an answer.
        with httpx.Client(timeout=60) as client:
            fresh = client.post(f"{url}/v1/models/m/predict", json=ROW)
        assert fresh.status_code == 200, fresh.text
        for caller in callers:
            caller.join(60)
        assert answers == [200] * 4  # every request in flight at the signal was answered
        assert process.wait(BOUND_S) == 0
        with pytest.raises(httpx.ConnectError):
            _ready(url)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
