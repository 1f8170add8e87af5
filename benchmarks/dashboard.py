"""The dashboard's pages over a large event log: each page's answer time through the real
server (in a thread), logged in with a viewer key's cookie.

    flock /tmp/conveyor-bench.lock nice -n 10 .venv/bin/python benchmarks/dashboard.py
    nice -n 19 .venv/bin/python benchmarks/dashboard.py --lock /tmp/conveyor-bench.lock
    .venv/bin/python benchmarks/dashboard.py --events 1000000
    .venv/bin/python benchmarks/dashboard.py --prepare-into /tmp/dash   # fill, compact, keep
    .venv/bin/python benchmarks/dashboard.py --prepared /tmp/dash       # time it again

One SQLite project (store and event log in one file): ``--events`` prediction events of a
day (default 10 million, the day of ``benchmarks/monitor_query.py``: four models, their
versions and arms, 1% failed requests, two workers' samples every 10 s), all but the last
``--tail`` compacted into the columnar copy (Parquet) as the scheduled compaction leaves
them; two models registered and routed, an alert incident, so the other pages have rows.
Then every page is fetched ``--rounds`` times (after one warm-up fetch): median and
worst milliseconds. The traffic pages read the monitors through
:meth:`MonitorQuery.system` (DuckDB over the Parquet files and the log's tail), never a
scan of the row store; they are timed for one model's last hour, every model's last hour,
and a whole day (5-minute windows), each from the per-minute rollups compaction writes
(the default) and from every event (``&exact=1``: the path before rollups), in the same
run; then the whole day's latency and system monitors in-process both ways, and how far
their answers are apart (counts equal, percentiles within 1 %). Results:
``results/dashboard.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import monitor_query as mq


def _prepare(root: Path, url: str, events: int, tail: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.monitoring import compact
    from conveyor.monitoring.compaction import copy_root
    from conveyor.project import Project, init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    init_project(root, name="dashboard-bench")
    spec = root / "conveyor.yaml"
    spec.write_text(spec.read_text() + f"\nbackends:\n  store: {url}\n  events: {url}\n")
    generated = mq.traffic(events)
    head = events - tail
    rest: list[Any] = []

    def first() -> Iterator[list[Any]]:
        left = head
        while left > 0:
            chunk = next(generated, None)
            if chunk is None:
                return
            yield chunk[:left]
            rest.extend(chunk[left:])
            left -= len(chunk)

    day_us = int(mq.DAY.timestamp() * 1_000_000)
    sampled = mq._samples(day_us, day_us + 86_400_000_000, np.random.default_rng(7))
    mq.fill(url, iter([sampled]), print)
    filled = mq.fill(url, first(), print)
    with Project.open(root) as project:
        done = compact(project)
        print(f"compacted {done.events:,} events in {done.seconds:.0f} s")
        rollups = copy_root(project) / "rollups"
        rolled = list(rollups.rglob("*.parquet")) if rollups.is_dir() else []
    tail_events = [*rest, *(c for chunk in generated for c in chunk)]
    mq.fill(url, iter([tail_events]), print)
    with Project.open(root) as project:
        X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
        routes = RouteStore(project.store, project.events, project.registry)
        for name in ("fraud", "churn"):
            for k in (1, 2):
                project.registry.register(
                    name, LinearRegression().fit(X, k * X.sum(axis=1)), signature_from=X
                )
            routes.set(name, RoutePolicy.fixed(2))
    return {
        "fill": filled,
        "compaction": {
            "events": done.events,
            "files": done.files,
            "seconds": round(done.seconds, 2),
            "rollup_files": len(rolled),
            "rollup_bytes": sum(p.stat().st_size for p in rolled),
        },
        "tail_events": len(tail_events),
    }


def _pages() -> dict[str, str]:
    end = f"{mq.DAY + timedelta(hours=15):%Y-%m-%dT%H:%M:%SZ}"  # the day's busy afternoon
    day_end = f"{mq.DAY + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"
    return {
        "models": "/ui/models",
        "model": "/ui/models/fraud",
        "routes": "/ui/routes",
        "rollouts": "/ui/rollouts",
        "traffic, one model, last hour (1m windows)": (
            f"/ui/monitor?model=fraud&since=1h&until={end}"
        ),
        "traffic, every model, last hour (1m windows)": f"/ui/monitor?since=1h&until={end}",
        "traffic, every model, whole day (5m windows)": (
            f"/ui/monitor?since=24h&window=5m&until={day_end}"
        ),
        # the same three read from every event (no rollups): the figures before rollups
        "traffic, one model, last hour (1m windows), exact": (
            f"/ui/monitor?model=fraud&since=1h&until={end}&exact=1"
        ),
        "traffic, every model, last hour (1m windows), exact": (
            f"/ui/monitor?since=1h&until={end}&exact=1"
        ),
        "traffic, every model, whole day (5m windows), exact": (
            f"/ui/monitor?since=24h&window=5m&until={day_end}&exact=1"
        ),
        "drift": "/ui/drift",
        "alerts": "/ui/alerts",
        "experiments": "/ui/experiments",
        "readiness": "/ui/readiness",
    }


def _time_pages(root: Path, rounds: int) -> dict[str, Any]:
    import httpx

    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    out: dict[str, Any] = {}
    with Project.open(root) as project:
        # a name of its own per timing, so a kept preparation (--prepared) can be re-timed
        name = f"bench-{datetime.now(UTC):%Y%m%d%H%M%S%f}"
        viewer, _ = ApiKeys(project.store, project.events).create(name, "viewer")
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            with httpx.Client(cookies={"conveyor_ui": viewer}, timeout=120) as client:
                for name, path in _pages().items():
                    started = time.perf_counter()
                    first = client.get(server.url + path)
                    first_ms = (time.perf_counter() - started) * 1000
                    assert first.status_code == 200, (path, first.status_code, first.text[:300])
                    times = []
                    for _ in range(rounds):
                        started = time.perf_counter()
                        answer = client.get(server.url + path)
                        times.append((time.perf_counter() - started) * 1000)
                        assert answer.status_code == 200
                    out[name] = {
                        "path": path,
                        "median_ms": round(statistics.median(times), 1),
                        "max_ms": round(max(times), 1),
                        # the warm-up fetch: the first traffic page also decodes the
                        # rollup files it reads (kept in memory afterwards)
                        "first_ms": round(first_ms, 1),
                        "bytes": len(answer.content),
                    }
                    print(
                        f"{name:48s} {out[name]['median_ms']:8.1f} ms (max {out[name]['max_ms']})"
                    )
        finally:
            server.stop()
    return out


def _time_monitors(root: Path, rounds: int) -> dict[str, Any]:
    """The whole day's latency monitor (1-minute windows) and system monitors (5-minute
    windows) in this process, from the rollups and from every event, and how far the two
    answers are apart: every count must be equal, every percentile within 1 %."""
    from conveyor.project import Project

    since, until = mq.DAY, mq.DAY + timedelta(days=1)
    out: dict[str, Any] = {}
    with Project.open(root) as project:
        monitor = project.monitoring
        for name, call, window in (
            ("latency", monitor.latency, timedelta(minutes=1)),
            ("system", monitor.system, timedelta(minutes=5)),
        ):
            answers = {}
            for exact in (True, False):
                times = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    report = call(since=since, until=until, window=window, exact=exact)
                    times.append((time.perf_counter() - started) * 1000)
                answers[exact] = report
                label = f"{name}, whole day, {'exact' if exact else 'rollups'}"
                out[label] = {"median_ms": round(statistics.median(times), 1)}
                print(f"{label:48s} {out[label]['median_ms']:8.1f} ms")
            out[f"{name}, agreement"] = _agreement(answers[True].windows, answers[False].windows)
            print(f"{name}, agreement: {out[f'{name}, agreement']}")
    return out


def _agreement(exact: list[dict[str, Any]], rolled: list[dict[str, Any]]) -> dict[str, Any]:
    key = ("model", "version", "arm", "window")
    a = {tuple(w[k] for k in key): w for w in exact}
    b = {tuple(w[k] for k in key): w for w in rolled}
    counts = [c for c in ("requests", "answered", "errors_4xx", "errors_5xx", "cached", "rows")
              if exact and c in exact[0]]  # fmt: skip
    worst = 0.0
    unequal = 0
    for group, want in a.items():
        got = b.get(group)
        if got is None or any(got[c] != want[c] for c in counts) or got["max_ms"] != want["max_ms"]:
            unequal += 1
            continue
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            if want[q]:
                worst = max(worst, abs(got[q] - want[q]) / want[q])
    return {
        "groups": len(a),
        "same_groups": a.keys() == b.keys(),
        "groups_with_a_count_unequal": unequal,
        "worst_relative_quantile_error": worst,
    }


@contextlib.contextmanager
def _locked(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    import fcntl

    with open(path, "a") as held:
        print(f"waiting for {path}")
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--tail", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--lock",
        help="take this flock only while timing (the day's fill and compaction run outside it; "
        "run them under nice so they disturb other timings little)",
    )
    parser.add_argument("--prepare-into", help=argparse.SUPPRESS)
    parser.add_argument(
        "--prepared",
        help="time a folder an earlier run prepared with --prepare-into (kept), instead of "
        "filling and compacting a new one",
    )
    args = parser.parse_args()
    if args.prepare_into:
        folder = Path(args.prepare_into)
        done = _prepare(
            folder / "project", f"sqlite:///{folder}/conveyor.db", args.events, args.tail
        )
        (folder / "prepared.json").write_text(json.dumps(done))
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        if args.prepared:
            tmp = args.prepared
        root = Path(tmp) / "project"
        url = f"sqlite:///{tmp}/conveyor.db"
        if args.prepared:
            prepared = json.loads((Path(tmp) / "prepared.json").read_text())
        elif args.lock:
            # the fill and compaction in a child at the lowest priority, outside the lock
            # (so they hold no other benchmark up and disturb its timings little)
            subprocess.run(
                ["nice", "-n", "19", sys.executable, __file__, "--prepare-into", tmp,
                 "--events", str(args.events), "--tail", str(args.tail)],
                check=True,
            )  # fmt: skip
            prepared = json.loads((Path(tmp) / "prepared.json").read_text())
        else:
            prepared = _prepare(root, url, args.events, args.tail)
        with _locked(args.lock):
            pages = _time_pages(root, args.rounds)
            monitors = _time_monitors(root, 3)
    result = {
        "benchmark": "dashboard",
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "backend": "sqlite",
        "events": args.events,
        "rounds": args.rounds,
        "target_ms": 300,
        "prepared": prepared,
        "pages": pages,
        "monitors": monitors,
        "over_target": [n for n, p in pages.items() if p["median_ms"] >= 300],
        "wall_s": round(time.perf_counter() - started, 1),
        "measured_at": datetime.now(UTC).isoformat(),
    }
    print(f"wrote {harness.write_result('dashboard', result)}")


if __name__ == "__main__":
    main()
