"""A route change reaches every worker of every server of a fleet by PostgreSQL
LISTEN/NOTIFY, not by the poll (every 10 s here): real server processes, each on its own
host (network namespace) where the machine allows it, behind HAProxy."""

from __future__ import annotations

import time

import psycopg
import pytest
from fleet_support import EXPECTED, ROW, FleetFactory, RunningFleet, direct_versions

from conveyor.backends import BackendURL
from conveyor.project import Project
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy

pytestmark = pytest.mark.slow  # real processes and a balancer: seconds each


def _set(fleet: RunningFleet, version: int) -> float:
    """Route m to ``version`` from this process; when it was committed."""
    with Project.open(fleet.fleet.root, env={}) as project:
        RouteStore(project.store, project.events, project.registry).set(
            "m", RoutePolicy.fixed(version), actor="test", reason="fleet"
        )
    return time.monotonic()


def _converged(fleet: RunningFleet, version: int, deadline_s: float) -> float:
    """Seconds until every server answered only ``version`` (16 requests each, on new
    connections: spread over its workers); AssertionError after ``deadline_s``."""
    started = time.monotonic()
    pending = set(fleet.server_urls())
    while pending:
        for url in sorted(pending):
            if direct_versions(url, fleet.keys["admin"], 16) == {version}:
                pending.discard(url)
        assert time.monotonic() - started < deadline_s, f"still on the old route: {pending}"
    return time.monotonic() - started


def test_a_route_change_reaches_every_worker_of_every_server_without_polling(
    make_fleet: FleetFactory,
) -> None:
    fleet = make_fleet(servers=2, workers=2)
    print("hosts:", "network namespaces" if fleet.separate else "loopback ports")
    for url in fleet.server_urls():
        assert direct_versions(url, fleet.keys["admin"], 8) == {1}
    # Three changes, each seen by every worker within 5 s. With a poll every 10 s, the four
    # workers would all poll within 5 s of a change by chance 1 time in 16, and three times
    # in a row 1 time in 4096: the changes were pushed.
    for version in (2, 1, 2):
        committed = _set(fleet, version)
        took = _converged(fleet, version, deadline_s=5)
        print(f"@{version} everywhere within {took:.3f} s (an upper bound: 32 requests a check)")
        assert time.monotonic() - committed < 10
    # Through the balancer too.
    import httpx

    for _ in range(10):
        answer = httpx.post(
            f"{fleet.url}/v1/models/m/predict",
            json=ROW,
            headers={"x-api-key": fleet.keys["admin"]},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 2
        assert answer.json()["predictions"][0] == pytest.approx(EXPECTED[2])


def test_listeners_reconnect_when_their_connections_are_cut(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(servers=2, workers=1)
    dsn = BackendURL.parse(fleet.store).with_(query={}).render(hide_password=False)
    names = [f"conveyor-routes:{pid}" for pid in fleet.fleet.pids.values()]  # 1 worker each
    with psycopg.connect(dsn, autocommit=True) as conn:
        cut = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = ANY(%s)",
            (names,),
        ).fetchall()
    assert len(cut) == 2, cut  # each server's listener
    time.sleep(1.0)  # the listeners are back (0.1 s backoff), having polled once
    for version in (2, 1, 2):
        _set(fleet, version)
        _converged(fleet, version, deadline_s=5)
