"""Over real uvicorn: a request that arrives while the worker has no other in flight calls a
cheap model on the event loop (no thread hand-off); one that arrives while another is in
flight goes through the batcher's thread, and every caller gets its own answer either way."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from serving_support import linear_project

from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until


def _in_flight(server: ThreadedServer) -> int:
    """What ``inflight.requests_in_flight()`` reads on the server's own thread."""
    return len(server.server.server_state.tasks)


def test_lone_requests_run_on_the_loop_and_a_burst_is_batched(tmp_path: Path) -> None:
    project = linear_project(
        tmp_path / "p",
        name="inline",
        serving="{auth: disabled, batching: {max_wait_ms: 5, inline_max_ms: 5}}",
    )
    try:
        # Conveyor's protocol (as `conveyor serve` runs): it counts the requests in flight.
        with ThreadedServer(create_app(project), header_timeout_s=30) as server:
            url = f"{server.url}/v1/models/m/predict"
            wait_until(
                lambda: httpx.post(url, json={"records": [{"a": 1, "b": 1}]}).status_code == 200,
                message="m@1 answers",
                timeout=30,
            )
            batcher = server.app.state.server.pool.get("m", 1).batcher
            with httpx.Client() as client:
                for i in range(12):  # one at a time: the cost gets measured, then inline
                    answer = client.post(url, json={"records": [{"a": i, "b": 1}]})
                    assert answer.json()["predictions"] == pytest.approx([i + 1.0])
            lone = list(batcher.history)[-6:]
            assert all(b.inline and b.requests == 1 for b in lone), lone
            # counted down after each answer: uvicorn drops a request's task once the task
            # ends, which can be just after the client has read the answer
            wait_until(lambda: _in_flight(server) == 0, message="no request in flight", timeout=5)

            # Another request in flight (its headers in, its body still coming): not alone.
            host, port = server.url.removeprefix("http://").split(":")
            body = b'{"records": [{"a": 1, "b": 1}]}'
            with socket.create_connection((host, int(port))) as held:
                held.sendall(
                    b"POST /v1/models/m/predict HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % len(body)
                    + body[:1]
                )
                wait_until(lambda: _in_flight(server) == 1, message="held in flight")
                with httpx.Client() as client:
                    answer = client.post(url, json={"records": [{"a": 2, "b": 2}]})
                assert answer.json()["predictions"] == pytest.approx([4.0])
                assert not batcher.history[-1].inline
                held.sendall(body[1:])
                assert b"200 OK" in held.recv(65536)

            # A burst: every caller gets its own answer, whichever way each one ran.
            async def burst() -> list[float]:
                limits = httpx.Limits(max_connections=64)
                async with httpx.AsyncClient(limits=limits) as client:
                    answers = await asyncio.gather(
                        *(
                            client.post(url, json={"records": [{"a": i, "b": 0.5}]})
                            for i in range(64)
                        )
                    )
                return [float(a.json()["predictions"][0]) for a in answers]

            assert asyncio.run(burst()) == pytest.approx([i + 0.5 for i in range(64)])
    finally:
        project.close()


def test_two_servers_in_one_process_count_their_own_requests(tmp_path: Path) -> None:
    # Two servers in one process (notebooks, tests): each one's requests in flight are its
    # own, whichever of them accepted a connection last.
    first = linear_project(
        tmp_path / "a", name="a", serving="{auth: disabled, batching: {inline_max_ms: 5}}"
    )
    second = linear_project(tmp_path / "b", name="b", serving="{auth: disabled}")
    try:
        with (
            ThreadedServer(create_app(first), header_timeout_s=30) as a,
            ThreadedServer(create_app(second), header_timeout_s=30) as b,
            httpx.Client() as client,
        ):
            url = f"{a.url}/v1/models/m/predict"
            for i in range(8):  # measured, on a kept-alive connection to a
                client.post(url, json={"records": [{"a": i, "b": 1}]}).raise_for_status()
            host, port = b.url.removeprefix("http://").split(":")
            held = [socket.create_connection((host, int(port))) for _ in range(2)]
            try:
                for sock in held:  # two requests in flight on b, their bodies still coming
                    sock.sendall(
                        b"POST /v1/models/m/predict HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 9\r\n\r\n{"
                    )
                time.sleep(0.3)
                answer = client.post(url, json={"records": [{"a": 2, "b": 2}]})
                assert answer.json()["predictions"] == pytest.approx([4.0])
                batcher = a.app.state.server.pool.get("m", 1).batcher
                assert batcher.history[-1].inline  # alone on a, whatever b is doing
            finally:
                for sock in held:
                    sock.close()
    finally:
        first.close()
        second.close()
