"""A key's rate limit holds for the whole fleet: its token bucket is in Redis, shared by
every worker of every server, so two servers do not give a key twice its budget."""

from __future__ import annotations

import time

import httpx
import pytest
from fleet_support import ROW, FleetFactory

pytestmark = pytest.mark.slow  # real processes and a balancer: seconds each


def test_a_keys_limit_holds_across_two_servers_behind_the_balancer(
    make_fleet: FleetFactory,
) -> None:
    fleet = make_fleet(servers=2, workers=1)
    token = fleet.keys["limited"]  # burst 3, then 2 a second
    s0, s1 = fleet.server_urls()
    targets = [s0, s1, fleet.url]  # each server directly, and through the balancer
    statuses: list[int] = []
    with httpx.Client(timeout=10, headers={"x-api-key": token}) as client:
        started = time.monotonic()
        for i in range(18):
            answer = client.post(f"{targets[i % 3]}/v1/models/m/predict", json=ROW)
            statuses.append(answer.status_code)
        elapsed = time.monotonic() - started
    ok = statuses.count(200)
    print(f"18 requests in {elapsed:.2f} s over two servers: {ok} answered, the rest 429")
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) > 0
    # One bucket: the burst plus what refilled meanwhile. Per-server buckets would have
    # answered twice the burst before the first refusal on each server.
    assert ok <= 3 + int(2 * elapsed) + 1, (statuses, elapsed)
    first_refusal = statuses.index(429)
    assert first_refusal <= 3 + int(2 * elapsed) + 1, statuses
    # Both servers refused the key once the shared bucket was empty.
    refused_by = {targets[i % 3] for i, s in enumerate(statuses) if s == 429}
    assert {s0, s1} <= refused_by, statuses
