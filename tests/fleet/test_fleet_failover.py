"""A server killed (SIGKILL) or told to drain (SIGTERM) under load, behind HAProxy and
behind nginx: the balancer takes it out and no request fails beyond the ones the killed
server was answering (none, for a drain). Client threads count every answer."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from fleet_support import FleetFactory, Load

pytestmark = pytest.mark.slow  # real processes and a balancer: seconds each

THREADS = 4


@pytest.mark.parametrize("balancer", ["haproxy", "nginx"])
@pytest.mark.parametrize("how", ["drain", "kill"])
def test_a_server_leaves_under_load_without_failing_requests(
    make_fleet: FleetFactory, balancer: str, how: str
) -> None:
    fleet = make_fleet(servers=2, workers=1, balancer=balancer)
    print("hosts:", "network namespaces" if fleet.separate else "loopback ports")
    with Load(fleet.url, fleet.keys["admin"], threads=THREADS) as load:
        load.wait_answers(200)
        before = load.ok
        fleet.fleet.signal("s0", signal.SIGTERM if how == "drain" else signal.SIGKILL)
        left = time.monotonic()
        if how == "drain":  # readiness fails first, while s0 still answers
            ready = httpx.get(fleet.fleet.server_url("s0") + "/v2/health/ready", timeout=5)
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
        assert fleet.fleet.wait_exit("s0", 60), "s0 did not stop"
        gone_s = time.monotonic() - left
        # The fleet keeps answering on s1 alone.
        load.wait_answers(300)
    answered = load.ok - before
    print(f"{how} behind {balancer}: s0 gone after {gone_s:.2f} s; {dict(load.results)}")
    assert answered >= 300
    if how == "drain":
        assert load.failures == [], load.failures
    else:
        # At most the requests s0 was answering when it died: one per client thread.
        assert len(load.failures) <= THREADS, load.failures
    assert fleet.fleet.status()["servers"][1]["ready"]


def test_a_drained_server_comes_back_into_rotation(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(servers=2, workers=1)
    fleet.fleet.stop_server("s0")
    fleet.fleet.start_server("s0")
    fleet.fleet.wait_ready("s0")
    s0 = fleet.fleet.server_url("s0")

    def served_by_s0() -> float:
        text = httpx.get(
            f"{s0}/metrics", headers={"x-api-key": fleet.keys["admin"]}, timeout=10
        ).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("conveyor_requests_total{")
        )

    from conveyor.testing.wait import wait_until

    with Load(fleet.url, fleet.keys["admin"], threads=2) as load:
        wait_until(lambda: served_by_s0() > 20, message="the balancer sends to s0 again")
    assert load.failures == [], load.failures
