"""Redis and PostgreSQL cut (refused) and hung (SIGSTOP) mid-traffic, through a real TCP
proxy in front of the real services: the server keeps answering, takes each fallback (cache
bypassed, per-process rate buckets, keys known before), says so in readiness and a gauge,
and recovers by itself when the service is back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from serving_support import linear_project, wait_served

from conveyor.backends import BackendURL
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.services import POSTGRES_URL, postgres_schema, redis_prefix, require
from conveyor.testing.tcp_proxy import TcpProxy
from conveyor.testing.wait import wait_until

ROW = {"records": [{"a": 1.0, "b": 2.0}]}
FAST = "{poll_interval_s: 0.2, dependencies: {reset_s: 0.3}}"


def _through(url: str, proxy: TcpProxy) -> str:
    parsed = BackendURL.parse(url)
    return parsed.with_(host="127.0.0.1", port=proxy.port).render(hide_password=False)


def _predict(url: str, token: str, timeout: float = 10) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/m/predict", json=ROW, headers={"x-api-key": token}, timeout=timeout
    )


def _ready(url: str) -> dict[str, object]:
    body: dict[str, object] = httpx.get(f"{url}/v2/health/ready", timeout=10).json()
    return body


def _gauge(url: str, token: str, dependency: str) -> str:
    text = httpx.get(f"{url}/metrics", headers={"x-api-key": token}, timeout=10).text
    line = f'conveyor_dependency_degraded{{dependency="{dependency}"}} '
    found = [x for x in text.splitlines() if x.startswith(line)]
    return found[0].removeprefix(line) if found else "absent"


def _until(predicate: Callable[[], bool], message: str) -> None:
    wait_until(predicate, message=message, timeout=30)


@pytest.fixture
def redis_down(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], TcpProxy]]:
    """A served project whose cache and rate limiter are the real Redis, through a proxy."""
    require("127.0.0.1", 6379, "Redis")
    with TcpProxy("127.0.0.1", 6379) as proxy, redis_prefix() as cache, redis_prefix() as limits:
        project = linear_project(
            tmp_path,
            name="redis-outage",
            serving=FAST,
            backends={"cache": _through(cache, proxy), "ratelimit": _through(limits, proxy)},
        )
        keys = ApiKeys(project.store, project.events)
        tokens = {
            "free": keys.create("free", "admin")[0],
            # 3 requests, then 1 a second: the fallback buckets must enforce the same.
            "limited": keys.create("limited", "predictor", rate_per_second=1, burst=3)[0],
        }
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            wait_served(server.url, {"x-api-key": tokens["free"]})
            yield server.url, tokens, proxy
        finally:
            server.stop()
            project.close()


@pytest.mark.parametrize("failure", ["refuse", "hang"])
def test_redis_down_bypasses_the_cache_and_limits_per_process(
    redis_down: tuple[str, dict[str, str], TcpProxy], failure: str
) -> None:
    url, tokens, proxy = redis_down
    assert _predict(url, tokens["free"]).status_code == 200
    assert _gauge(url, tokens["free"], "cache") == "0.0"
    getattr(proxy, failure)()
    started = time.monotonic()
    answers = [_predict(url, tokens["free"]) for _ in range(30)]
    assert [a.status_code for a in answers] == [200] * 30, answers[-1].text
    assert all(a.json()["predictions"] == pytest.approx([3.0]) for a in answers)
    # The health probes never waited on Redis.
    assert httpx.get(f"{url}/v2/health/live", timeout=2).status_code == 200
    ready = _ready(url)
    assert ready["ready"] is True and ready["status"] == "degraded", ready
    assert "cache" in ready["dependencies"]  # type: ignore[operator]
    assert _gauge(url, tokens["free"], "cache") == "1.0"
    # A limited key: its budget from this worker's own buckets (not 503, not unlimited).
    limited = [_predict(url, tokens["limited"]).status_code for _ in range(8)]
    assert 200 in limited and limited.count(429) >= 3 and 503 not in limited, limited
    assert "ratelimit" in _ready(url)["dependencies"]  # type: ignore[operator]
    outage_s = time.monotonic() - started
    # 38 requests through an outage cost at most the timeouts of the first few calls
    # (a hang would otherwise hold each for redis-py's 5 s): nothing stalled.
    assert outage_s < 30, outage_s

    proxy.restore()

    def recovered() -> bool:
        _predict(url, tokens["free"])  # trial calls happen on requests
        _predict(url, tokens["limited"])
        return "dependencies" not in _ready(url)

    _until(recovered, "the cache and the limiter are used again")
    assert _ready(url) == {"ready": True, "status": "ready"}
    assert _gauge(url, tokens["free"], "cache") == "0.0"


@pytest.fixture
def store_down(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], TcpProxy, Project]]:
    """A served project whose metadata store is the real PostgreSQL, through a proxy."""
    parsed = BackendURL.parse(POSTGRES_URL)
    require(parsed.host or "127.0.0.1", parsed.port or 5432, "PostgreSQL")
    with (
        TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432) as proxy,
        postgres_schema() as pg,
    ):
        project = linear_project(
            tmp_path, name="store-outage", serving=FAST, backends={"store": _through(pg, proxy)}
        )
        keys = ApiKeys(project.store, project.events)
        tokens = {
            name: keys.create(name, "admin" if name == "known" else "predictor")[0]
            for name in ("known", "unseen", "revoked")
        }
        app = create_app(project)
        project.keys.cache_ttl = 0.3  # the server's key cache: re-read the store soon
        server = ThreadedServer(app)
        server.start()
        try:
            wait_served(server.url, {"x-api-key": tokens["known"]})
            yield server.url, tokens, proxy, project
        finally:
            server.stop()
            project.close()


@pytest.mark.parametrize("failure", ["refuse", "hang"])
def test_store_down_authenticates_from_the_keys_known_before(
    store_down: tuple[str, dict[str, str], TcpProxy, Project], failure: str
) -> None:
    url, tokens, proxy, project = store_down
    assert _predict(url, tokens["revoked"]).status_code == 200
    ApiKeys(project.store).revoke("revoked")  # elsewhere (another process's keys)

    def refused() -> bool:
        return _predict(url, tokens["revoked"]).status_code == 401

    _until(refused, "the server learns of the revocation")
    assert _predict(url, tokens["known"]).status_code == 200
    getattr(proxy, failure)()
    time.sleep(0.5)  # past the key cache's 0.3 s: every key must be read again
    answers = [_predict(url, tokens["known"]) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20, answers[-1].text
    revoked = _predict(url, tokens["revoked"])
    assert revoked.status_code == 401 and revoked.json()["code"] == "unauthenticated"
    unseen = _predict(url, tokens["unseen"])  # never read before the outage: cannot be known
    assert unseen.status_code == 503 and unseen.json()["code"] == "backend_unavailable"
    assert str(proxy.port) not in unseen.text and "postgresql" not in unseen.text  # log only
    assert httpx.get(f"{url}/v2/health/live", timeout=2).status_code == 200
    ready = _ready(url)
    assert ready["status"] == "degraded" and "store" in ready["dependencies"], ready  # type: ignore[operator]
    assert _gauge(url, tokens["known"], "store") == "1.0"

    proxy.restore()

    def recovered() -> bool:
        return _predict(url, tokens["unseen"]).status_code == 200

    _until(recovered, "keys are read from the store again")
    _until(lambda: "dependencies" not in _ready(url), "readiness says the store is back")
