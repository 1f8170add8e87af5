"""``conveyor serve`` drains on SIGTERM (``serving.drain``), single process and ``--workers 2``:
readiness fails at once, the requests in flight at the signal are all answered, a new
connection is still accepted during the drain window, and the process exits 0 within the
drain's bound. A stop whose shut-down hangs on a dead service still ends; a threaded
server whose shut-down hangs says so instead of passing over it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import SlowMarked, conveyor_serve, linear_project

from conveyor.backends import BackendURL
from conveyor.serving.server import ThreadedServer
from conveyor.testing.services import POSTGRES_URL, postgres_schema, require
from conveyor.testing.tcp_proxy import TcpProxy
from conveyor.testing.wait import wait_until

ROW = {"records": [{"a": 1.0, "b": 2.0}]}
#: Readiness fails 3 s before the server may stop (a balancer's detection time), a quiet
#: 0.3 s ends the window, and a stop takes at most 5 + 20 s plus the shut-down's 10 s.
DRAIN = (
    "{auth: disabled, poll_interval_s: 0.2, batching: {max_batch_size: 1}, "
    "drain: {min_s: 3, quiet_s: 0.3, max_s: 5, graceful_s: 20, shutdown_s: 10}}"
)
BOUND_S = 5 + 20 + 10 + 15  # the drain's bound, plus start-up slack for a loaded machine


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


def test_a_stop_ends_when_the_store_hangs(tmp_path: Path) -> None:
    """The store (PostgreSQL) hangs behind a stopped proxy: the route poll, the event log's
    last commit and the project's close would each wait for ever; the stop still ends."""
    parsed = BackendURL.parse(POSTGRES_URL)
    require(parsed.host or "127.0.0.1", parsed.port or 5432, "PostgreSQL")
    with (
        TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432) as proxy,
        postgres_schema() as pg,
    ):
        through = BackendURL.parse(pg).with_(host="127.0.0.1", port=proxy.port).render(False)
        serving = (
            "{auth: disabled, poll_interval_s: 0.2, "
            "drain: {quiet_s: 0.2, max_s: 2, graceful_s: 2, shutdown_s: 4}}"
        )
        linear_project(
            tmp_path, name="hung", serving=serving, backends={"store": through, "events": through}
        ).close()
        process, port = conveyor_serve(tmp_path, "-C", str(tmp_path))
        url = f"http://127.0.0.1:{port}"
        try:

            def ready() -> bool:
                assert process.poll() is None, "conveyor serve exited"
                try:
                    return httpx.get(f"{url}/v2/models/m/ready", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(ready, message="conveyor serve is ready", timeout=90)
            assert httpx.post(f"{url}/v1/models/m/predict", json=ROW, timeout=10).status_code == 200
            proxy.hang()
            process.send_signal(signal.SIGTERM)
            # 2 s of drain + 2 s for requests + 4 s of shut-down + 5 s to exit, and slack.
            code = process.wait(60)
            # 1: the shut-down was cut (the event log's last events could not be committed).
            assert code in (0, 1)
        finally:
            proxy.restore()
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_threaded_server_whose_shutdown_hangs_says_so() -> None:
    release = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            while not release.is_set():  # a shut-down hook that never returns
                await asyncio.sleep(0.05)
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b'{"ready": true}'
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    server = ThreadedServer(app).start()
    try:
        with pytest.raises(RuntimeError, match="did not stop within 1 s"):
            server.stop(timeout_s=1)
    finally:
        release.set()
        server.stop()
    assert not server.thread.is_alive()
