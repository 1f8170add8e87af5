"""Throughput through dependency outages: Redis and PostgreSQL refused, then hung, mid-load.

    .venv/bin/python benchmarks/outages.py            # ~1 minute
    .venv/bin/python benchmarks/outages.py --duration 10

``conveyor serve`` (1 worker, auth on, an unlimited predictor key) serves the
LogisticRegression of the serving benchmark with its prediction cache and
rate limiter on the real Redis and its metadata store on the real
PostgreSQL, each through a TCP proxy (``conveyor.testing.tcp_proxy``). wrk
(c=64, one JSON row per request) measures requests/s in five phases:
normal; both proxies killed (connections refused); restored; both proxies
stopped with SIGSTOP (connections that neither fail nor answer); restored.
The issue's bar: during an outage, within 20% of normal.

Writes ``benchmarks/results/outages.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import harness
from peers import serving_workload as wl

import serving as bench


def _project(root: Path, env: dict[str, str]) -> str:
    """The LR model routed (cache on) in a project on ``env``'s backends; the key's token."""
    import pandas as pd

    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project, init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    init_project(root, name="bench-outages")
    rows, _ = wl.training_rows()
    frame = pd.DataFrame(rows[:100], columns=wl.FEATURES)
    with Project.open(root, env=env) as project:
        project.registry.register("bench_lr", wl.fit("lr", frame=True), signature_from=frame)
        RouteStore(project.store, project.events, project.registry).set(
            "bench_lr", RoutePolicy.fixed(1, cache=True)
        )
        token, _ = ApiKeys(project.store, project.events).create("bench", "predictor")
    return str(token)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.backends import BackendURL
    from conveyor.testing.services import POSTGRES_URL, postgres_schema, redis_prefix
    from conveyor.testing.tcp_proxy import TcpProxy

    pg = BackendURL.parse(POSTGRES_URL)
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-outages-"))
    result: dict[str, Any] = {
        "benchmark": "outages",
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "settings": {
            "duration_s": args.duration,
            "concurrency": 64,
            "server": "conveyor serve, 1 worker, auth on (unlimited predictor key), cache on "
            "(Redis), rate limiter on Redis, store on PostgreSQL; each through a TCP proxy",
        },
        "phases": {},
    }
    with (
        TcpProxy("127.0.0.1", 6379) as redis_proxy,
        TcpProxy(pg.host or "127.0.0.1", pg.port or 5432) as pg_proxy,
        postgres_schema() as store_url,
        redis_prefix() as cache_url,
        redis_prefix() as limits_url,
    ):

        def through(url: str, proxy: TcpProxy) -> str:
            parsed = BackendURL.parse(url)
            return parsed.with_(host="127.0.0.1", port=proxy.port).render(hide_password=False)

        env = {
            "CONVEYOR_STORE": through(store_url, pg_proxy),
            "CONVEYOR_CACHE": through(cache_url, redis_proxy),
            "CONVEYOR_RATELIMIT": through(limits_url, redis_proxy),
        }
        token = _project(tmp / "project", env)
        server = bench.Server(
            name="conveyor",
            argv=[
                *(sys.executable, "-m", "conveyor.cli", "serve", "-C", str(tmp / "project")),
                *("--host", "127.0.0.1", "--port", "{port}", "--workers", "1"),
            ],
            ready_path="/v2/health/ready",
            predict_path="/v1/models/bench_lr/predict",
            body=wl.records_body(),
            env={k: v for k, v in {**os.environ, **env}.items()},
            headers={"x-api-key": token},
        )
        running = bench.start(server, tmp)
        try:
            bench.check_answer(running, 1.0)

            def phase(name: str, before: Any = None) -> None:
                if before is not None:
                    before()
                m = bench.measure(running, 64, args, tmp)
                result["phases"][name] = m
                print(
                    f"{name:<22} {m['rps']:8.0f} rps  p50 {m['p50_ms']:7.2f} ms  "
                    f"p99 {m['p99_ms']:8.2f}  non-2xx {m['non_2xx']}  errors {m['errors']}"
                )

            def both(action: str) -> Any:
                return lambda: (getattr(redis_proxy, action)(), getattr(pg_proxy, action)())

            phase("normal")
            phase("refused", both("refuse"))
            phase("restored", both("restore"))
            phase("hung", both("hang"))
            phase("restored-again", both("restore"))
        finally:
            bench.stop_proc(running.proc)
    normal = result["phases"]["normal"]["rps"]
    result["ratio_to_normal"] = {
        name: round(m["rps"] / normal, 3) for name, m in result["phases"].items()
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each")
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(args)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    print("ratio to normal:", result["ratio_to_normal"])
    print("wrote", harness.write_result("outages", result))


if __name__ == "__main__":
    main()
