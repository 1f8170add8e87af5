"""The fleet tests' fixture: a running fleet of real server processes behind a real balancer,
each server on its own host (a network namespace, where the machine allows it) reaching
PostgreSQL and Redis through proxies the test can cut."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet_support import Host, fleet_project, hosts, through

from conveyor.fleet.balancer import FleetPlan, Member
from conveyor.fleet.manager import Fleet
from conveyor.fleet.settings import FleetSpec
from conveyor.serving.server import free_port
from conveyor.testing.services import POSTGRES_URL, postgres_schema, redis_prefix, require
from conveyor.testing.tcp_proxy import TcpProxy

#: One poll every 10 s (the most allowed): what every worker sees within a few seconds,
#: again and again, was pushed (LISTEN/NOTIFY).
#: The cache's timeout at 0.25 s (0.02 s by default): on a loaded 2-core machine a healthy
#: Redis misses 20 ms often enough to keep reopening the breaker after an outage.
SERVING = "{poll_interval_s: 10, dependencies: {reset_s: 0.3, cache_timeout_s: 0.25}}"


@dataclass
class RunningFleet:
    fleet: Fleet
    keys: dict[str, str]
    hosts: list[Host]
    store: str
    separate: bool

    @property
    def url(self) -> str:
        return self.fleet.url

    def server_urls(self) -> list[str]:
        return [self.fleet.server_url(m) for m in self.fleet.plan.members]

    def proxies(self) -> list[TcpProxy]:
        return [p for h in self.hosts for p in h.proxies.values()]


FleetFactory = Callable[..., RunningFleet]


@contextmanager
def running_fleet(
    root: Path,
    *,
    servers: int = 2,
    balancer: str = "haproxy",
    workers: int = 1,
    separate: bool | None = None,
    serving: str = SERVING,
) -> Iterator[RunningFleet]:
    require("127.0.0.1", 5432, "PostgreSQL")
    require("127.0.0.1", 6379, "Redis")
    with ExitStack() as stack:
        store = stack.enter_context(postgres_schema(POSTGRES_URL))
        cache = stack.enter_context(redis_prefix())
        limits = stack.enter_context(redis_prefix())
        found = stack.enter_context(hosts(servers, separate=separate))
        keys = fleet_project(root, store=store, cache=cache, ratelimit=limits, serving=serving)
        members = []
        for host in found:
            pg = TcpProxy("127.0.0.1", 5432, listen_host=host.gateway).start()
            stack.callback(pg.refuse)
            redis = TcpProxy("127.0.0.1", 6379, listen_host=host.gateway).start()
            stack.callback(redis.refuse)
            host.proxies = {"postgres": pg, "redis": redis}
            env = {
                "CONVEYOR_STORE": through(store, pg),
                "CONVEYOR_CACHE": through(cache, redis),
                "CONVEYOR_RATELIMIT": through(limits, redis),
            }
            port = 8100 if host.prefix else free_port()
            members.append(Member(host.name, host.address, port, host.address, host.prefix, env))
        spec = FleetSpec(
            balancer=balancer,
            servers=servers,
            port=free_port(),
            check_interval_s=0.2,
            fall=2,
            rise=2,
        )
        fleet = Fleet(
            root, FleetPlan(spec, tuple(members), root / ".conveyor" / "fleet"), workers=workers
        )
        stack.callback(fleet.down, drain=False)
        fleet.up()
        yield RunningFleet(fleet, keys, found, store, bool(found and found[0].prefix))


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[FleetFactory]:
    with ExitStack() as stack:
        count = 0

        def make(**options: object) -> RunningFleet:
            nonlocal count
            count += 1
            root = tmp_path / f"fleet{count}"
            return stack.enter_context(running_fleet(root, **options))  # type: ignore[arg-type]

        yield make
