"""The serving fleet: throughput behind the balancer against the same servers hit directly,
the cost of the balancer's hop, and how fast a route change reaches every process.

    flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/fleet.py   # -> results/fleet.json

One project on the real PostgreSQL (store: policy, keys, LISTEN/NOTIFY) and Redis
(cache and rate limits), the serving benchmark's LogisticRegression (20 features, one
JSON row per request), auth on (wrk sends a predictor key), cache off. For 1, 2 and 4
servers (``conveyor fleet``, one worker each; this machine has 2 cores, so 4 servers
share them with wrk and the balancer):

- ``direct``: one wrk per server at once, each at 64 / N connections: the servers' sum;
- ``haproxy`` and ``nginx``: one wrk at 64 connections to the balancer;
- the hop: one server, concurrency 1, direct against through each balancer (p50, p99);
- propagation: 100 route changes with 4 servers; a client thread per server holds a
  keep-alive connection and predicts in a loop (5 ms apart; and again with no pause, every
  server busy); a change's time is from its commit, as a listener of the benchmark's own
  sees the NOTIFY (and from the start of ``RouteStore.set``, its audit event included), to
  the first answer of the new version from the last server. Both versions stay loaded
  (the other one is the route's shadow), so this is the push and the switch, not a load.

Plus what the capacity model in docs/scale-out.md needs: Redis's own ops/s here
(redis-benchmark: GET, SET, INCR), and JetStream's from the event-log broker benchmark.
Peers in the same run: the direct servers are the balancers' peer.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import harness
from peers import serving_workload as wl

sys.path.insert(0, str(harness.ROOT / "src"))

LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = "{key}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"errors":%d,"status":%d,'
    .. '"p50_us":%d,"p99_us":%d,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def start_wrk(url: str, lua: Path, connections: int, seconds: float) -> subprocess.Popen[str]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    return subprocess.Popen(
        [*argv, "-s", str(lua), url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wrk_result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=600)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]} {err[-500:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    return {
        "rps": round((raw["requests"] - raw["status"]) / seconds, 1),
        "requests": raw["requests"],
        "errors": raw["errors"],
        "non_2xx": raw["status"],
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": round(raw["mean_us"] / 1000, 3),
    }


def wrk_many(urls: list[str], lua: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk per URL at once, ``connections`` spread evenly: the sum and each."""
    each = max(1, connections // len(urls))
    processes = [start_wrk(u, lua, each, seconds) for u in urls]
    results = [wrk_result(p) for p in processes]
    return {
        "rps": round(sum(r["rps"] for r in results), 1),
        "errors": sum(r["errors"] + r["non_2xx"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "each": results,
    }


def make_project(root: Path, store: str, cache: str, ratelimit: str) -> str:
    """The project (serving benchmark's LR, routed; @2 the same model as the shadow):
    returns a predictor key."""
    import re

    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project, init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    init_project(root, name="fleet-bench")
    path = root / "conveyor.yaml"
    text = path.read_text()
    for seam, url in (("store", store), ("cache", cache), ("ratelimit", ratelimit)):
        text, found = re.subn(rf"(?m)^  {seam}: .*$", f"  {seam}: '{url}'", text)
        assert found == 1, seam
    path.write_text(text + "serving: {workers: 1, cache: false}\n")
    import pandas as pd

    model = wl.fit("lr", frame=True)
    frame = pd.DataFrame(wl.training_rows()[0][:200], columns=wl.FEATURES)
    with Project.open(root, env={}) as project:
        for _ in range(2):
            project.registry.register("lr", model, signature_from=frame)
        RouteStore(project.store, project.events, project.registry).set(
            "lr", RoutePolicy.from_dict({"mode": "fixed", "versions": [{"version": 1}]})
        )
        return ApiKeys(project.store, project.events).create("bench", "predictor")[0]


def fleet_for(root: Path, servers: int, balancer: str, port: int, server_port: int) -> Any:
    from conveyor.fleet.manager import Fleet

    return Fleet.plan_for(
        root,
        {"servers": servers, "balancer": balancer, "port": port, "server_port": server_port},
    )


def free_block(count: int) -> int:
    """A first port with ``count`` free ports after it."""
    import socket

    from conveyor.serving.server import free_port

    for _ in range(100):
        first = free_port()
        ok = True
        for port in range(first, first + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise RuntimeError("no block of free ports")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and all their descendants (from /proc)."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    wanted = set(pids)
    grew = True
    while grew:
        more = {p for p, parent in parents.items() if parent in wanted} - wanted
        wanted |= more
        grew = bool(more)
    return sum(cpu.get(p, 0.0) for p in wanted)


def with_cpu(run: Any, groups: dict[str, list[int]]) -> dict[str, Any]:
    """``run()`` (a wrk result), with each group's CPU microseconds per answered request."""
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    result: dict[str, Any] = run()
    answered = max(1, result["requests"] - result["non_2xx"])
    for name, pids in groups.items():
        used = cpu_seconds(pids) - before[name]
        result[f"{name}_cpu_us_per_request"] = round(used * 1e6 / answered, 1)
    return result


# -- propagation ----------------------------------------------------------------------------


class Probe(threading.Thread):
    """Predicts in a loop on one keep-alive connection to one server; the time each
    answer's version was first seen after a mark."""

    def __init__(self, host: str, port: int, body: str, key: str, pause_s: float) -> None:
        super().__init__(daemon=True)
        self.pause_s = pause_s
        self.conn = http.client.HTTPConnection(host, port, timeout=10)
        self.body = body.encode()
        self.headers = {"content-type": "application/json", "x-api-key": key}
        self.version: int | None = None
        self.seen_at: dict[int, float] = {}
        self.stop = threading.Event()
        self.requests = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.conn.request("POST", "/v1/models/lr/predict", self.body, self.headers)
            answer = self.conn.getresponse()
            data = answer.read()
            now = time.monotonic()
            self.requests += 1
            if answer.status != 200:
                continue
            version = json.loads(data)["version"]
            if version != self.version:
                self.version = version
                self.seen_at[version] = now
            if self.pause_s:
                time.sleep(self.pause_s)


def propagation(
    root: Path, fleet: Any, key: str, changes: int, pause_s: float = 0.0
) -> dict[str, Any]:
    from conveyor.project import Project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    body = wl.records_body()
    probes = [Probe(m.address, m.port, body, key, pause_s) for m in fleet.plan.members]
    for p in probes:
        p.start()
    from conveyor.serving.watcher import RouteListener

    latencies, after_commit, commits = [], [], []
    # The commit, as a listener of its own sees it: the moment the NOTIFY is delivered.
    noticed: dict[int, float] = {}

    def notice(model: str | None, revision: int | None) -> None:
        if revision is not None:
            noticed[revision] = time.monotonic()

    with Project.open(root, env={}) as project:
        routes = RouteStore(project.store, project.events, project.registry, verify=False)
        dsn = project.store.url.with_(driver=None).render(hide_password=False)
        listener = RouteListener(dsn, notice).start()
        while not listener.connected:
            time.sleep(0.01)

        def policy(version: int) -> Any:
            return RoutePolicy.from_dict(
                {"mode": "fixed", "versions": [{"version": version}], "shadow": [3 - version]}
            )

        routes.set("lr", policy(1))
        deadline = time.monotonic() + 30
        while any(p.version != 1 for p in probes) and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(changes):
            version = 2 if i % 2 == 0 else 1
            for p in probes:
                p.seen_at.pop(version, None)
            started = time.monotonic()
            state = routes.set("lr", policy(version))
            commits.append(time.monotonic() - started)
            deadline = time.monotonic() + 30
            while any(version not in p.seen_at for p in probes) or state.revision not in noticed:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"change {i} did not reach every server in 30 s")
                time.sleep(0.0005)
            last = max(p.seen_at[version] for p in probes)
            latencies.append(last - started)
            after_commit.append(last - noticed[state.revision])
            time.sleep(0.05)
        listener.stop()
    for p in probes:
        p.stop.set()
    for p in probes:
        p.join(15)
    return {
        "changes": changes,
        "processes": len(probes),
        "from_set_call": _summary(latencies),
        "from_commit": _summary(after_commit),
        "set_call": _summary(commits),
        "probe_requests": sum(p.requests for p in probes),
        "probe_pause_ms": pause_s * 1000,
    }


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in seconds)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], 2),
        "max_ms": round(ms[-1], 2),
    }


# -- Redis and PostgreSQL -------------------------------------------------------------------


def redis_ops() -> dict[str, Any]:
    """redis-benchmark here, 50 connections, no pipelining: ops/s of each command."""
    out = subprocess.run(
        [
            *("redis-benchmark", "-h", "127.0.0.1", "-p", "6379", "-q", "-n", "100000"),
            *("-c", "50", "-t", "get,set,incr"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    found: dict[str, Any] = {}
    for line in out.replace("\r", "\n").splitlines():
        if "requests per second" in line:
            name, _, rest = line.partition(":")
            found[name.strip()] = float(rest.split()[0])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--servers", default="1,2,4")
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--out", default="fleet")
    args = parser.parse_args()
    from conveyor.testing.services import postgres_schema, redis_prefix

    started = time.monotonic()
    counts = [int(x) for x in args.servers.split(",")]
    result: dict[str, Any] = {
        "benchmark": "fleet",
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "note": "2 CPU cores shared by every server, the balancer and wrk: the fleet "
        "cannot scale past what 2 cores give; the figures show the balancer's overhead "
        "and the propagation, not scale-out",
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "workers_per_server": 1,
            "connections": 64,
            "model": "the serving benchmark's LogisticRegression, 20 features, 1 row",
            "server": "conveyor fleet server (conveyor serve + drain), auth on, cache off",
            "haproxy": subprocess.run(
                ["haproxy", "-v"], capture_output=True, text=True
            ).stdout.split("\n")[0],
            "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        },
        "throughput": {},
        "hop": {},
    }
    with (
        postgres_schema() as store,
        redis_prefix() as cache,
        redis_prefix() as limits,
        tempfile.TemporaryDirectory() as tmp,
    ):
        root = Path(tmp) / "project"
        key = make_project(root, store, cache, limits)
        lua = Path(tmp) / "predict.lua"
        lua.write_text(LUA.format(body=wl.records_body(), key=key))
        hops: dict[str, list[dict[str, Any]]] = {}
        for servers in counts:
            row: dict[str, Any] = {}
            for balancer in ("haproxy", "nginx"):
                fleet = fleet_for(root, servers, balancer, free_block(1), free_block(servers))
                try:
                    fleet.up()
                    urls = [
                        fleet.server_url(m) + "/v1/models/lr/predict" for m in fleet.plan.members
                    ]
                    lb = fleet.url + "/v1/models/lr/predict"
                    servers_pids = list(fleet.pids.values())
                    lb_pid = [fleet.balancer_pid] if fleet.balancer_pid else []
                    if balancer == "haproxy":  # the same processes, hit directly
                        wrk_result(start_wrk(urls[0], lua, 8, args.warmup))
                        before = cpu_seconds(servers_pids)
                        row["direct"] = wrk_many(urls, lua, 64, args.duration)
                        answered = sum(r["requests"] - r["non_2xx"] for r in row["direct"]["each"])
                        row["direct"]["servers_cpu_us_per_request"] = round(
                            (cpu_seconds(servers_pids) - before) * 1e6 / max(1, answered), 1
                        )
                    wrk_result(start_wrk(lb, lua, 8, args.warmup))
                    row[balancer] = with_cpu(
                        lambda lb=lb: wrk_result(start_wrk(lb, lua, 64, args.duration)),
                        {"servers": servers_pids, "balancer": lb_pid},
                    )
                    if servers == 1:  # concurrency 1, rounds interleaved: medians
                        for _ in range(3):
                            if balancer == "haproxy":
                                hops.setdefault("direct", []).append(
                                    wrk_result(start_wrk(urls[0], lua, 1, args.duration / 2))
                                )
                            hops.setdefault(balancer, []).append(
                                wrk_result(start_wrk(lb, lua, 1, args.duration / 2))
                            )
                finally:
                    fleet.down(drain=False)
            row["haproxy_ratio_to_direct"] = round(row["haproxy"]["rps"] / row["direct"]["rps"], 3)
            row["nginx_ratio_to_direct"] = round(row["nginx"]["rps"] / row["direct"]["rps"], 3)
            result["throughput"][str(servers)] = row
            rps = {k: v["rps"] if isinstance(v, dict) else v for k, v in row.items()}
            print(f"{servers} servers: {json.dumps(rps)}")
        hop = result["hop"]
        for name, rounds in hops.items():
            hop[name] = {
                k: round(statistics.median(r[k] for r in rounds), 3)
                for k in ("rps", "p50_ms", "p99_ms", "mean_ms")
            } | {"rounds": len(rounds)}
        for balancer in ("haproxy", "nginx"):
            hop[f"{balancer}_added_p50_ms"] = round(
                hop[balancer]["p50_ms"] - hop["direct"]["p50_ms"], 3
            )
        print("hop:", {k: v for k, v in hop.items() if not isinstance(v, dict)})
        fleet = fleet_for(root, max(counts), "haproxy", free_block(1), free_block(max(counts)))
        try:
            fleet.up()
            # Probes with a pause (a few hundred requests/s per server: the servers have CPU
            # to spare) and probes in a tight loop (every server busy, on 2 shared cores).
            result["propagation"] = propagation(root, fleet, key, args.changes, 0.005)
            result["propagation_busy"] = propagation(root, fleet, key, args.changes, 0.0)
        finally:
            fleet.down(drain=False)
        print("propagation:", result["propagation"])
        print("propagation, servers busy:", result["propagation_busy"])
    result["redis_benchmark_ops_per_s"] = redis_ops()
    for name in ("event_log_broker.json", "event_log_broker-quick.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            broker = json.loads((harness.RESULTS / name).read_text())["results"]
            result["jetstream_from_event_log_broker"] = {
                "events_per_s_one_process": broker["nats_appends"]["events_per_s_median"],
                "events_per_s_node_2_processes": broker["nats_appends_node_2_processes"][
                    "events_per_s"
                ],
                "sink_events_per_s": broker["sink_postgresql_parquet"]["events_per_s"],
                "note": f"from benchmarks/results/{name} (not this run)",
            }
            break
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    path = harness.write_result(args.out, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
