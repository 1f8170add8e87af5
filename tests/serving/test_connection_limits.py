"""Slow or idle clients cannot hold the server's connections: late headers close the
connection, a trickled body gets 408, an idle keep-alive connection is closed, and beyond
the connection cap new requests get 503 at once while the others are answered."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_support import conveyor_serve, linear_project, wait_served

from conveyor.project import Project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    opened: Project = linear_project(
        tmp_path, name="limits", serving="{auth: disabled, body_timeout_s: 0.5}"
    )
    try:
        yield opened
    finally:
        opened.close()


def _connect(server: ThreadedServer) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    conn.settimeout(10)
    return conn


def _closed(conn: socket.socket) -> bool:
    """True once the server has closed its side (a read returns b'' or the reset)."""
    try:
        conn.setblocking(False)
        data = conn.recv(65536)
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        conn.setblocking(True)
    return data == b"" or (b"HTTP/1.1" in data and _closed(conn))


def test_a_client_sending_headers_slowly_is_disconnected(project: Project) -> None:
    server = ThreadedServer(create_app(project), header_timeout_s=0.5)
    server.start()
    try:
        slow = _connect(server)
        slow.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # never finishes
        silent = _connect(server)  # never sends a byte
        wait_until(lambda: _closed(slow), message="late headers close the connection")
        wait_until(lambda: _closed(silent), message="a silent connection is closed")
        # A client that sends its headers in time is served as usual.
        assert httpx.get(f"{server.url}/v2/health/live", timeout=10).status_code == 200
        slow.close()
        silent.close()
    finally:
        server.stop()


def test_a_trickled_body_gets_408_as_json(project: Project) -> None:
    server = ThreadedServer(create_app(project), header_timeout_s=5)
    server.start()
    try:
        wait_served(server.url)
        conn = _connect(server)
        conn.sendall(
            b"POST /v1/models/m/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b'\r\nContent-Length: 100\r\n\r\n{"records"'
        )
        answer = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk or time.monotonic() > deadline:
                break
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert b'"code":"request_timeout"' in body
        conn.close()
    finally:
        server.stop()


def test_an_idle_keep_alive_connection_is_closed(project: Project) -> None:
    server = ThreadedServer(create_app(project), keep_alive_s=1)
    server.start()
    try:
        conn = _connect(server)
        conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        wait_until(lambda: _closed(conn), message="the idle connection is closed")
        conn.close()
    finally:
        server.stop()


def test_beyond_the_connection_cap_requests_get_503_and_the_others_are_served(
    project: Project,
) -> None:
    server = ThreadedServer(create_app(project), max_connections=3)
    server.start()
    try:
        wait_served(server.url)
        held = [_connect(server) for _ in range(3)]
        for conn in held:  # connections that hold their slot: headers never finished
            conn.sendall(b"POST /v1/models/m/predict HTTP/1.1\r\nHost: x\r\n")
        wait_until(  # with the cap taken, one more is refused at once
            lambda: httpx.get(f"{server.url}/v2/health/live", timeout=10).status_code == 503,
            message="a request beyond the cap gets 503",
        )
        for conn in held:
            conn.close()
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/health/live", timeout=10).status_code == 200,
            message="slots free up once the held connections go",
        )
    finally:
        server.stop()


def test_conveyor_serve_with_workers_applies_the_header_deadline(project: Project) -> None:
    """The protocol reaches every worker process (by name) with the configured deadline."""
    process, port = conveyor_serve(
        project.root,
        "--workers",
        "2",
        "-C",
        str(project.root),
        env={"CONVEYOR_SERVING__HEADER_TIMEOUT_S": "0.5"},
    )
    url = f"http://127.0.0.1:{port}/v2/health/live"

    def live() -> bool:
        assert process.poll() is None, "conveyor serve exited"
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(live, message="conveyor serve answers", timeout=60)
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        wait_until(lambda: _closed(silent), message="a silent connection is closed")
        silent.close()
    finally:
        process.terminate()
        process.wait(30)
