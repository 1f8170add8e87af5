"""A stop always ends: ``conveyor serve`` whose PostgreSQL store and event log hang behind a
stopped proxy still exits after SIGTERM (the route poll is a daemon thread, the event log's
last commit is bounded, a watchdog ends what still hangs); a threaded server whose
shut-down hangs says so instead of passing over it."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import conveyor_serve, linear_project

from conveyor.backends import BackendURL
from conveyor.serving.server import ThreadedServer
from conveyor.testing.services import POSTGRES_URL, postgres_schema, require
from conveyor.testing.tcp_proxy import TcpProxy
from conveyor.testing.wait import wait_until

ROW = {"records": [{"a": 1.0, "b": 2.0}]}


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
        log = tmp_path / "serve.log"
        process, port = conveyor_serve(tmp_path, "-C", str(tmp_path), log=log)
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
            assert code in (0, 1), log.read_text(errors="replace")[-6000:]
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


def _ready_app() -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"ready": true}'})

    return app


def test_a_threaded_server_holds_its_port_from_the_start_and_frees_it_when_stopped() -> None:
    """A port read off bind(0) and closed could be handed to another test worker before the
    server binds it; the other's server would then answer this one's readiness probe. The
    server keeps the socket it found its port with, so nothing else can bind the port."""
    import socket

    server = ThreadedServer(_ready_app())
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", server.port))
    with server:
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    with socket.socket() as other:
        other.bind(("127.0.0.1", server.port))  # released by the stop
    never_started = ThreadedServer(_ready_app())
    never_started.stop()
    with socket.socket() as other:
        other.bind(("127.0.0.1", never_started.port))  # released without a start too


def test_a_stopped_server_leaves_no_route_poll_thread_behind(tmp_path: Path) -> None:
    """The route poll runs on one long-lived thread of the watcher's: stopping the server
    ends it, so apps started and stopped in one process do not pile up idle threads."""
    from conveyor.serving.app import create_app

    def polls() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "conveyor-route-poll"]

    before = set(map(id, polls()))
    project = linear_project(tmp_path, name="poll-thread", serving="{auth: disabled}")
    try:
        server = ThreadedServer(create_app(project)).start()
        try:
            assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
            mine = [t for t in polls() if id(t) not in before]
            assert len(mine) == 1
        finally:
            server.stop()
        wait_until(
            lambda: not mine[0].is_alive(), message="the route poll thread to end", timeout=30
        )
    finally:
        project.close()
