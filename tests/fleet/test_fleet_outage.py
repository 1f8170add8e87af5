"""PostgreSQL and Redis cut (proxies killed) or hung (SIGSTOP) under every server of a
fleet at once, mid-traffic: the fleet keeps answering on the routes it had, with keys it
knew, its per-process rate buckets and no cache; the balancer keeps every server in (they
stay ready, degraded); all of it recovers by itself when the services are back, and route
changes are pushed again."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from fleet_support import ROW, FleetFactory, Load, direct_versions

from conveyor.project import Project
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.testing.wait import wait_until

pytestmark = pytest.mark.slow  # real processes and a balancer: seconds each


def _ready(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/v2/health/ready", timeout=5).json()
    return body


@pytest.mark.parametrize("failure", ["hang", "refuse"])
def test_the_fleet_serves_through_a_database_and_cache_outage(
    make_fleet: FleetFactory, failure: str
) -> None:
    fleet = make_fleet(servers=2, workers=1)
    admin, limited = fleet.keys["admin"], fleet.keys["limited"]
    # Both keys known to both servers before the outage.
    for url in fleet.server_urls():
        for token in (admin, limited):
            answer = httpx.post(
                f"{url}/v1/models/m/predict", json=ROW, headers={"x-api-key": token}, timeout=10
            )
            assert answer.status_code == 200, answer.text
    with Load(fleet.url, admin, threads=4) as load:
        load.wait_answers(100)
        for proxy in fleet.proxies():
            getattr(proxy, failure)()
        cut = time.monotonic()
        # Longer than the servers' key cache (5 s): keys come from what they read before.
        while time.monotonic() - cut < 7:
            time.sleep(0.25)
        answered = load.ok
        for url in fleet.server_urls():
            ready = _ready(url)
            assert ready["ready"] is True and ready["status"] == "degraded", ready
            # The cache bypassed; keys from memory once the 5 s key cache expired.
            assert {"cache", "store"} <= set(ready["dependencies"]), ready
        # A limited key is limited by each worker's own buckets meanwhile: 429, never 503.
        # (Two servers' buckets: 3 each, then 2/s each: 40 requests on one connection get
        # refusals unless they take over 8 s.)
        with httpx.Client(timeout=10, headers={"x-api-key": limited}) as client:
            statuses = [
                client.post(f"{fleet.url}/v1/models/m/predict", json=ROW).status_code
                for _ in range(40)
            ]
        assert 200 in statuses and 429 in statuses and 503 not in statuses, statuses
        assert any("ratelimit" in _ready(u).get("dependencies", {}) for u in fleet.server_urls())
        for proxy in fleet.proxies():
            proxy.restore()
        restored = time.monotonic()

        def recovered() -> bool:
            for url in fleet.server_urls():  # the limiter is tried on a limited key's request
                httpx.post(f"{url}/v1/models/m/predict", json=ROW, headers={"x-api-key": limited})
            states = [_ready(u) for u in fleet.server_urls()]
            return all(s == {"ready": True, "status": "ready"} for s in states)

        # Breakers try again after 0.3 s doubling to 30 s: at most 30 s after the restore.
        wait_until(recovered, message="every server uses Redis again", timeout=90)
        recovered_s = time.monotonic() - restored
    print(
        f"{failure}: {answered} answered during the outage and after; recovered in "
        f"{recovered_s:.2f} s; {dict(load.results)}"
    )
    assert load.failures == [], load.failures[:10]
    # Route changes reach every server again (pushed: the listeners came back).
    with Project.open(fleet.fleet.root, env={}) as project:
        RouteStore(project.store, project.events, project.registry).set(
            "m", RoutePolicy.fixed(2), actor="test", reason="after the outage"
        )
    wait_until(
        lambda: all(direct_versions(u, admin, 8) == {2} for u in fleet.server_urls()),
        message="the route change reaches every server after the outage",
        timeout=30,
    )
