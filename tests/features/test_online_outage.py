"""A Redis online store that refuses connections or hangs (SIGSTOP), through a real TCP proxy
in front of the real Redis: ``POST /v1/features/get`` answers 503 ``backend_unavailable``
(never an empty vector), a hang costs a request the guard's timeout and stalls nothing
else, the server recovers by itself; in Python, ``online_features`` raises
BackendUnavailableError."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from features_support import spend_project

from conveyor.errors import BackendUnavailableError
from conveyor.features.materialize import materialize, online_features, online_store
from conveyor.project import Project
from conveyor.testing.services import require
from conveyor.testing.tcp_proxy import TcpProxy
from conveyor.testing.wait import wait_until

pytestmark = pytest.mark.redis

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=2, minutes=10)
#: The guard's timeout and breaker reset, short so that the tests are quick.
SERVING = "serving: {dependencies: {store_timeout_s: 0.3, reset_s: 0.3}}\n"
#: Redis' own socket timeout: a hang must be answered long before it.
SOCKET_TIMEOUT_S = 5
BODY = {"service": "fraud", "entities": [{"customer_id": 1}]}


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Project, TcpProxy]]:
    """The spend project, materialized to the real Redis through a TCP proxy."""
    require("127.0.0.1", 6379, "Redis")
    with TcpProxy("127.0.0.1", 6379) as proxy:
        url = (
            f"redis://127.0.0.1:{proxy.port}/0?prefix=test-{uuid.uuid4().hex}:"
            f"&socket_timeout={SOCKET_TIMEOUT_S}"
        )
        env = {"CONVEYOR_ONLINE": url}
        spend_project(tmp_path, T0, env).close()
        with (tmp_path / "conveyor.yaml").open("a") as spec:
            spec.write(SERVING)
        project = Project.open(tmp_path, env=env)
        try:
            materialize(project, now=NOW)
            yield project, proxy
        finally:
            proxy.restore()
            online_store(project).kv.clear()
            project.close()


def test_online_features_raises_when_redis_refuses(
    proxied: tuple[Project, TcpProxy],
) -> None:
    project, proxy = proxied
    (before,) = online_features(project, [{"customer_id": 1}], "fraud", now=NOW)
    assert before["features"]["amount"] == 40.0
    proxy.refuse()
    with pytest.raises(BackendUnavailableError) as info:
        online_features(project, [{"customer_id": 1}], "fraud", now=NOW)
    assert info.value.code == "backend_unavailable"
    proxy.restore()
    (after,) = online_features(project, [{"customer_id": 1}], "fraud", now=NOW)
    assert after == before


def test_online_features_raises_when_nothing_listens(tmp_path: Path) -> None:
    project = spend_project(tmp_path, T0, {"CONVEYOR_ONLINE": "redis://127.0.0.1:1/0"})
    try:
        with pytest.raises(BackendUnavailableError, match=r"127\.0\.0\.1:1\b"):
            online_features(project, [{"customer_id": 1}], ["spend:amount"])
    finally:
        project.close()


@pytest.fixture
def served(proxied: tuple[Project, TcpProxy]) -> Iterator[tuple[str, httpx.Client, TcpProxy]]:
    """The proxied project served by a real uvicorn, and a viewer's client."""
    from conveyor.governance.keys import ApiKeys
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    project, proxy = proxied
    token, _ = ApiKeys(project.store, project.events).create("app", "viewer")
    server = ThreadedServer(create_app(project))
    server.start()
    client = httpx.Client(headers={"authorization": f"Bearer {token}"}, timeout=30)
    try:
        yield server.url, client, proxy
    finally:
        client.close()
        server.stop()


def _get(url: str, client: httpx.Client) -> httpx.Response:
    return client.post(f"{url}/v1/features/get", json=BODY)


def _unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["code"] == "backend_unavailable" and "results" not in body, body


def _recovers(url: str, client: httpx.Client) -> None:
    def answered() -> bool:
        got = _get(url, client)
        return got.status_code == 200 and got.json()["results"][0]["features"]["amount"] == 40.0

    wait_until(answered, message="features are read again once Redis is back", timeout=30)


def test_a_refused_redis_is_a_503_then_recovers(
    served: tuple[str, httpx.Client, TcpProxy],
) -> None:
    url, client, proxy = served
    ok = _get(url, client)
    assert ok.status_code == 200 and ok.json()["results"][0]["status"]["amount"] == "present"
    proxy.refuse()
    for _ in range(6):  # failing calls, then the open breaker: 503 every time
        _unavailable(_get(url, client))
    assert client.get(f"{url}/v2/health/live").status_code == 200
    ready = client.get(f"{url}/v2/health/ready").json()  # no model here: "empty", and why
    assert "online" in ready["dependencies"], ready
    proxy.restore()
    _recovers(url, client)


def test_a_hung_redis_is_a_503_after_the_timeout_and_stalls_nothing(
    served: tuple[str, httpx.Client, TcpProxy],
) -> None:
    url, client, proxy = served
    assert _get(url, client).status_code == 200
    proxy.hang()
    answers: list[Any] = []
    # A request in flight on the hung Redis, and the health probe meanwhile.
    inflight = threading.Thread(target=lambda: answers.append(_get(url, client)))
    inflight.start()
    live = client.get(f"{url}/v2/health/live", timeout=SOCKET_TIMEOUT_S / 2)
    assert live.status_code == 200
    inflight.join()
    started = time.monotonic()
    later = [_get(url, client) for _ in range(5)]
    waited = time.monotonic() - started
    for answer in [*answers, *later]:
        _unavailable(answer)
    # Answered by the guard (0.3 s, then the open breaker at once), not after Redis's own
    # socket timeout (5 s a call, which would have held these requests 25 s).
    assert waited < SOCKET_TIMEOUT_S, waited
    proxy.restore()
    _recovers(url, client)
