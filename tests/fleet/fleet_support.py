"""What the fleet tests share: a project on the real PostgreSQL and Redis, hosts (network
namespaces joined by veth pairs when the machine allows it, loopback ports otherwise),
TCP proxies in front of PostgreSQL and Redis for every host, a fleet of real processes
behind a real balancer, and a load of client threads that counts every failure.

The proxies are ``conveyor.testing.tcp_proxy.TcpProxy`` listening on each host's address.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.fleet.balancer import FleetPlan, Member
from conveyor.fleet.manager import Fleet
from conveyor.fleet.settings import FleetSpec
from conveyor.testing.ports import worker_port
from conveyor.testing.services import POSTGRES_URL, postgres_schema, redis_prefix, require
from conveyor.testing.tcp_proxy import TcpProxy

ROW = {"records": [{"a": 1.0, "b": 2.0}]}
#: Servers of the tests answer this after `scale` of the version that answered.
EXPECTED = {1: 3.0, 2: 6.0, 3: 9.0}


# -- hosts ---------------------------------------------------------------------------------


@dataclass
class Host:
    """Where one server runs: a network namespace (``prefix``) or this host's loopback."""

    name: str
    #: The server's address, as the balancer and the tests dial it.
    address: str
    #: The address of this machine as seen from that host (where its proxies listen).
    gateway: str
    prefix: tuple[str, ...] = ()
    proxies: dict[str, TcpProxy] = field(default_factory=dict)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def namespaces_work() -> bool:
    """Whether this machine lets the tests make network namespaces and veth pairs."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        return False
    name = f"cvyp{uuid.uuid4().hex[:6]}"
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        return True
    except (subprocess.CalledProcessError, OSError):
        return False
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@contextlib.contextmanager
def hosts(count: int, *, separate: bool | None = None) -> Iterator[list[Host]]:
    """``count`` hosts: separate network namespaces joined to this one by veth pairs when
    the machine allows it (``separate=None``: whenever it does), loopback otherwise."""
    if separate is None:
        separate = namespaces_work()
    if not separate:
        yield [Host(f"s{i}", "127.0.0.1", "127.0.0.1") for i in range(count)]
        return
    tag = uuid.uuid4().hex[:5]
    # A 10.N.0.0/16 no interface uses yet (tests run in parallel: each fixture its own).
    used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=False)
    taken = {int(x.split(".")[1]) for x in used.stdout.split() if x.startswith("10.")}
    first = int(tag, 16) % 150
    net = next(n for n in (100 + (first + k) % 150 for k in range(150)) if n not in taken)
    made: list[str] = []
    try:
        found = []
        for i in range(count):
            ns, outer, inner = f"cvy{tag}{i}", f"cvh{tag}{i}", f"cvn{tag}{i}"
            _run("ip", "netns", "add", ns)
            made.append(ns)
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", inner, "netns", ns)
            _run("ip", "addr", "add", f"10.{net}.{i}.1/30", "dev", outer)
            _run("ip", "link", "set", outer, "up")
            inside = ("ip", "netns", "exec", ns)
            _run(*inside, "ip", "addr", "add", f"10.{net}.{i}.2/30", "dev", inner)
            _run(*inside, "ip", "link", "set", inner, "up")
            _run(*inside, "ip", "link", "set", "lo", "up")
            found.append(Host(f"s{i}", f"10.{net}.{i}.2", f"10.{net}.{i}.1", inside))
        yield found
    finally:
        for ns in made:
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                for pid in subprocess.run(
                    ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
                ).stdout.split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


# -- the project ---------------------------------------------------------------------------


def fleet_project(
    root: Path, *, store: str, cache: str, ratelimit: str, serving: str = "", scales: int = 2
) -> dict[str, str]:
    """A project at ``root`` on PostgreSQL (``store``) and Redis (``cache``, ``ratelimit``),
    whose model ``m`` has versions 1..``scales`` (y = version * (a + b)), routed to @1;
    returns keys: ``admin``, ``limited`` (3 requests, then 2 a second)."""
    import re

    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project, init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    init_project(root, name="fleet")
    path = root / "conveyor.yaml"
    text = path.read_text()
    for seam, url in (("store", store), ("cache", cache), ("ratelimit", ratelimit)):
        text, found = re.subn(rf"(?m)^  {seam}: .*$", f"  {seam}: '{url}'", text)
        assert found == 1, seam
    path.write_text(text + (f"serving: {serving}\n" if serving else ""))
    with Project.open(root, env={}) as project:
        X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
        for scale in range(1, scales + 1):
            project.registry.register(
                "m", LinearRegression().fit(X, scale * X.sum(axis=1)), signature_from=X
            )
        RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
        keys = ApiKeys(project.store, project.events)
        return {
            "admin": keys.create("admin", "admin")[0],
            "limited": keys.create("limited", "predictor", rate_per_second=2, burst=3)[0],
        }


def through(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    from conveyor.backends import BackendURL

    parsed = BackendURL.parse(url)
    return parsed.with_(host=proxy.host, port=proxy.port).render(hide_password=False)


# -- load ----------------------------------------------------------------------------------


class Load:
    """Client threads posting predictions to ``url`` as fast as they can, on keep-alive
    connections; every answer is counted by status, every transport error by its type."""

    def __init__(self, url: str, token: str, threads: int = 4) -> None:
        self.url = url
        self.token = token
        self.threads = threads
        self.results: Counter[str] = Counter()
        self.failures: list[tuple[float, str]] = []
        self.versions: Counter[int] = Counter()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=10, headers={"x-api-key": self.token}) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post(f"{self.url}/v1/models/m/predict", json=ROW)
                    outcome = str(answer.status_code)
                    if answer.status_code == 200:
                        version = answer.json()["version"]
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with self._lock:
                    self.results[outcome] += 1
                    if outcome != "200":
                        self.failures.append((time.monotonic(), outcome))
                    else:
                        self.versions[version] += 1

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(30)

    @property
    def ok(self) -> int:
        return self.results["200"]

    def wait_answers(self, count: int, timeout_s: float = 60) -> None:
        """Until ``count`` more requests were answered 200."""
        target = self.ok + count
        deadline = time.monotonic() + timeout_s
        while self.ok < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"the load got {self.ok} answers, wanted {target}")
            time.sleep(0.02)


def direct_versions(url: str, token: str, count: int) -> set[int]:
    """The versions ``count`` requests straight to one server got (new connection each:
    the kernel spreads them over the server's workers)."""
    import httpx

    seen = set()
    for _ in range(count):
        answer = httpx.post(
            f"{url}/v1/models/m/predict",
            json=ROW,
            headers={"x-api-key": token, "connection": "close"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        seen.add(answer.json()["version"])
    return seen


def metric(url: str, token: str, name: str) -> dict[str, float]:
    """Every sample of a Prometheus series from a server's /metrics: {labels: value}."""
    import httpx

    text = httpx.get(f"{url}/metrics", headers={"x-api-key": token}, timeout=10).text
    found = {}
    for line in text.splitlines():
        if line.startswith(name):
            labels, _, value = line.rpartition(" ")
            found[labels[len(name) :]] = float(value)
    return found


def stop_all(process_ids: Any) -> None:
    for pid in process_ids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- a running fleet (the make_fleet fixture in conftest.py) ---------------------------

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
            port = 8100 if host.prefix else worker_port()
            members.append(Member(host.name, host.address, port, host.address, host.prefix, env))
        spec = FleetSpec(
            balancer=balancer,
            servers=servers,
            port=worker_port(),
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
