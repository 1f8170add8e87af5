"""Monitor queries over a day of predictions: the Parquet copy + tail against plain SQL.

    flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/monitor_query.py
    .venv/bin/python benchmarks/monitor_query.py --events 1000000 --backend sqlite

Per backend (SQLite file; a fresh PostgreSQL database, dropped afterwards), one project
with its store and event log there:

1. **fill**: ``--events`` prediction events (default 10 million: a day at ~115
   requests/s, with a daily cycle) over four models, their versions and arms (fixed
   routes, a canary, an A/B test), cache hits, batches and a few slow requests,
   appended through the log's own batch API (``append_many``, batches of 5,000 rows);
2. **compaction** of all but the last ``--tail`` events (``conveyor events compact``):
   events/s, files, bytes; then the last ``--tail`` events are written and left in the
   log (the *tail*, as a live server leaves them between compactions);
3. **the query**: latency p50/p95/p99, max, requests, cached answers and rows by model,
   version and arm per 1-minute window for the whole day, through
   ``MonitorQuery.latency`` (DuckDB over the Parquet files plus the tail read from the
   log), in a fresh process: the call's time (twice: first and again), the whole
   process's wall time and peak RSS (``wait4``);
4. **the limit it beats**: the same aggregates in plain SQL on the row store, in a fresh
   process too (SQLite: window functions, as it has no percentile; PostgreSQL:
   ``percentile_cont``, server defaults). Its peak RSS is the client's; the database
   server's memory is not counted. The two answers are compared: every group's count
   exactly, every percentile to 1e-9.

The day also holds what the server writes besides answers: 1% of requests fail
(``prediction.failed``: 422 bad input, 500 a model error, 503 shed load) and two worker
processes sample themselves every 10 s (``serving.sample``); the fresh query process also
times the system monitors (``MonitorQuery.system``: requests, rates, latency, 4xx/5xx,
shed, cache hits, batch sizes, queue depth, CPU and memory by model, version, arm and
minute, the same day). Results go to ``results/monitor_query.json`` (a run on one backend
keeps the other's figures there, with their own timestamp); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

PEERS: tuple[str, ...] = ()
BACKENDS = ("sqlite", "postgresql")
Log = Callable[[str], None]

DAY = datetime(2026, 12, 3, tzinfo=UTC)
WINDOW = timedelta(minutes=1)
#: model -> (share of traffic, median latency ms, [(version, arm, share of the model)]);
#: cached: whether its route has the prediction cache on.
MODELS: dict[str, dict[str, Any]] = {
    "fraud": {"share": 0.5, "ms": 2.0, "cached": True,
              "arms": [("3", "champion", 0.9), ("4", "canary", 0.1)]},
    "churn": {"share": 0.2, "ms": 6.0, "cached": False, "arms": [("7", "direct", 1.0)]},
    "pricing": {"share": 0.2, "ms": 9.0, "cached": True,
                "arms": [("12", "a", 0.5), ("13", "b", 0.5)]},
    "recsys": {"share": 0.1, "ms": 18.0, "cached": False, "arms": [("2", "fixed", 1.0)]},
}  # fmt: skip


# -- generating a day of traffic --------------------------------------------------------


def _day_times(n: int, rng: Any) -> Any:
    """``n`` sorted request times (microseconds) over the day, busier at 14:00 UTC."""
    import numpy as np

    out = []
    need = n
    while need > 0:
        t = rng.uniform(0, 86_400, int(need * 1.8) + 1000)
        keep = rng.uniform(0, 1, t.size) < 0.6 + 0.4 * np.cos((t / 3600 - 14) / 24 * 2 * np.pi)
        out.append(t[keep][:need])
        need -= out[-1].size
    seconds = np.sort(np.concatenate(out))
    return (seconds * 1_000_000).astype(np.int64) + int(DAY.timestamp()) * 1_000_000


def traffic(n: int, *, seed: int = 13, chunk: int = 50_000) -> Iterator[list[Any]]:
    """A day of prediction events as the server writes them, in time order, by chunks."""
    import numpy as np

    from conveyor.events.schema import EPOCH, Event, new_event_id

    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    times = _day_times(n, rng)
    names = list(MODELS)
    shares = np.array([MODELS[m]["share"] for m in names])
    version_ids = {
        (m, v): f"{pick.getrandbits(128):032x}" for m in names for v, _, _ in MODELS[m]["arms"]
    }
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        models = rng.choice(len(names), size=size, p=shares)
        spread = rng.lognormal(0.0, 0.45, size)
        slow = rng.uniform(0, 1, size) < 0.004
        hits = rng.uniform(0, 1, size)
        draws = rng.uniform(0, 1, size)
        outs = rng.uniform(0, 1, size).round(4)
        batch = rng.uniform(0, 1, size) < 0.05
        failed = rng.uniform(0, 1, size) < 0.01
        events = []
        for i in range(size):
            model = names[models[i]]
            spec = MODELS[model]
            acc = 0.0
            for version, arm, share in spec["arms"]:  # noqa: B007 (the one drawn is kept)
                acc += share
                if draws[i] < acc:
                    break
            cached = spec["cached"] and hits[i] < 0.08
            rows = int(1 + draws[i] * 31) if batch[i] else 1
            latency = 0.15 if cached else spec["ms"] * spread[i] * (12 if slow[i] else 1)
            time_us = int(times[start + i])
            if failed[i]:
                status, code = _FAILURES[int(draws[i] * 1000) % len(_FAILURES)]
                events.append(
                    Event(
                        "prediction.failed",
                        subject=model,
                        subject_version=version,
                        payload={
                            "status": status,
                            "code": code,
                            "version_id": version_ids[(model, version)],
                            "arm": arm,
                            "latency_ms": round(float(spec["ms"] * spread[i]), 3),
                        },
                        request_id=new_event_id(time_us // 1000),
                        actor="key:gateway",
                        time=EPOCH + timedelta(microseconds=time_us),
                    )
                )
                continue
            payload: dict[str, Any] = {
                "version_id": version_ids[(model, version)],
                "arm": arm,
                "flag": None,
                "latency_ms": round(float(latency), 3),
                "cached": bool(cached),
                "rows": rows,
                "output": [float(outs[i])] * min(rows, 4),
            }
            if spec["cached"]:
                payload["input_digest"] = f"{pick.getrandbits(128):032x}"
            events.append(
                Event(
                    "prediction",
                    subject=model,
                    subject_version=version,
                    payload=payload,
                    request_id=new_event_id(time_us // 1000),
                    trace_id=f"{pick.getrandbits(128):032x}" if i % 2 else None,
                    actor="key:gateway",
                    time=EPOCH + timedelta(microseconds=time_us),
                )
            )
        yield events


#: How generated requests fail: bad input twice as often as a model error or shed load.
_FAILURES = ((422, "invalid_input"), (422, "invalid_input"), (500, "internal"), (503, "overloaded"))
_SAMPLE_US = 10_000_000


def _samples(first_us: int, last_us: int, rng: Any) -> list[Any]:
    """``serving.sample`` events of two workers every 10 s in ``[first_us, last_us)``."""
    from conveyor.events.schema import EPOCH, Event

    events = []
    at = -(-first_us // _SAMPLE_US) * _SAMPLE_US
    while at < last_us:
        for pid in (101, 102):
            versions = [
                {"model": m, "version": v, "queue_rows": int(rng.integers(0, 8)),
                 "batches": int(rng.integers(200, 700)), "batch_rows": int(rng.integers(700, 900))}
                for m, spec in MODELS.items()
                for v, _, _ in spec["arms"]
            ]  # fmt: skip
            events.append(
                Event(
                    "serving.sample",
                    payload={
                        "pid": pid,
                        "host": "bench",
                        "interval_s": 10.0,
                        "uptime_s": at / 1e6,
                        "cpu_percent": round(float(rng.uniform(20, 90)), 2),
                        "rss_mib": round(float(rng.uniform(380, 420)), 2),
                        "threads": 9,
                        "queue_depth": sum(v["queue_rows"] for v in versions),
                        "versions": versions,
                        "batches": sum(v["batches"] for v in versions),
                        "batch_rows": sum(v["batch_rows"] for v in versions),
                        "shed": 0,
                        "failed": {},
                    },
                    time=EPOCH + timedelta(microseconds=at),
                )
            )
        at += _SAMPLE_US
    return events


def fill(url: str, events: Iterator[list[Any]], log: Log) -> dict[str, Any]:
    """Append ``events`` through the log's batch API; events/s until all are committed."""
    from conveyor.events import EventLog

    written = 0
    started = time.perf_counter()
    with EventLog.from_url(url, batch_size=5_000, max_buffer=200_000) as events_log:
        for chunk in events:
            events_log.append_many(chunk)
            written += len(chunk)
            if written % 1_000_000 < len(chunk):
                log(f"  {written:,} events appended ({time.perf_counter() - started:.0f} s)")
        events_log.flush()
    seconds = time.perf_counter() - started
    return {
        "events": written,
        "seconds": round(seconds, 2),
        "events_per_s": round(written / seconds),
    }


# -- the two sides of the query, each in its own process ---------------------------------------


def _side_parquet(project_dir: str, since: datetime, until: datetime) -> dict[str, Any]:
    from conveyor.monitoring.query import MonitorQuery
    from conveyor.project import Project

    with Project.open(project_dir) as project:
        monitor = MonitorQuery(project)
        # exact=True: every event, compared with the plain SQL below to the last digit; the
        # per-minute rollups (the default, within 1 %) are timed by benchmarks/dashboard.py
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            report = monitor.latency(since=since, until=until, window=WINDOW, exact=True)
            timings.append(time.perf_counter() - started)
        system_timings = []
        for _ in range(2):
            started = time.perf_counter()
            system = monitor.system(since=since, until=until, window=WINDOW, exact=True)
            system_timings.append(time.perf_counter() - started)
        return {
            "query_s": round(timings[0], 3),
            "again_s": round(timings[1], 3),
            "system_s": round(system_timings[0], 3),
            "system_again_s": round(system_timings[1], 3),
            "system_rows": len(system.windows),
            "system_requests": sum(w["requests"] for w in system.windows),
            "system_failed": sum(w["errors_4xx"] + w["errors_5xx"] for w in system.windows),
            "system_process_rows": len(system.processes),
            "read": report.snapshot.to_dict(),
            "groups": [
                [w["model"], w["version"], w["arm"], w["window"], w["requests"],
                 w["p50_ms"], w["p95_ms"], w["p99_ms"]]
                for w in report.windows
            ],
        }  # fmt: skip


_SQLITE = """
WITH p AS (
  SELECT subject AS model, subject_version AS version, json_extract(payload, '$.arm') AS arm,
         time_us / :w * :w AS window_us,
         json_extract(payload, '$.latency_ms') AS l,
         json_extract(payload, '$.cached') AS cached,
         json_extract(payload, '$.rows') AS nrows
  FROM events WHERE kind = 'prediction' AND time_us >= :since AND time_us < :until
), r AS (
  SELECT *, row_number() OVER (PARTITION BY model, version, arm, window_us ORDER BY l) AS rn,
         count(*) OVER (PARTITION BY model, version, arm, window_us) AS n
  FROM p
), g AS (
  SELECT model, version, arm, window_us, max(n) AS n, max(l) AS max_ms,
         sum(cached) AS cached, sum(nrows) AS rows,
         {picks}
  FROM r GROUP BY model, version, arm, window_us
)
SELECT model, version, arm, window_us, n, {values}, max_ms, cached, rows
FROM g ORDER BY window_us, model, version, arm
"""
_QS = (("50", 0.5), ("95", 0.95), ("99", 0.99))


def _sqlite_sql() -> str:
    picks, values = [], []
    for name, q in _QS:
        lo = f"CAST((n - 1) * {q} AS INTEGER) + 1"
        picks.append(f"max(CASE WHEN rn = {lo} THEN l END) AS lo{name}")
        picks.append(f"max(CASE WHEN rn = {lo} + 1 THEN l END) AS hi{name}")
        frac = f"((n - 1) * {q} - CAST((n - 1) * {q} AS INTEGER))"
        values.append(f"lo{name} + {frac} * (coalesce(hi{name}, lo{name}) - lo{name}) AS p{name}")
    return _SQLITE.format(picks=", ".join(picks), values=", ".join(values))


_POSTGRES = """
SELECT subject, subject_version, payload->>'arm' AS arm, time_us / :w * :w AS window_us,
       count(*),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
         (ORDER BY (payload->>'latency_ms')::float8) AS q,
       max((payload->>'latency_ms')::float8),
       count(*) FILTER (WHERE (payload->>'cached')::boolean),
       sum((payload->>'rows')::bigint)
FROM events WHERE kind = 'prediction' AND time_us >= :since AND time_us < :until
GROUP BY 1, 2, 3, 4 ORDER BY 4, 1, 2, 3
"""


def _side_plain(url: str, since: datetime, until: datetime) -> dict[str, Any]:
    import sqlalchemy as sa

    from conveyor.backends import BackendURL
    from conveyor.store.engine import create_engine

    parsed = BackendURL.parse(url)
    engine = create_engine(parsed, "events")
    params = {
        "w": WINDOW // timedelta(microseconds=1),
        "since": int(since.timestamp() * 1_000_000),
        "until": int(until.timestamp() * 1_000_000),
    }
    started = time.perf_counter()
    with engine.connect() as conn:
        if parsed.scheme == "postgresql":
            rows = conn.execute(sa.text(_POSTGRES), params).all()
            groups = [[r[0], r[1], r[2], r[3], r[4], *r[5]] for r in rows]
        else:
            rows = conn.execute(sa.text(_sqlite_sql()), params).all()
            groups = [list(r[:8]) for r in rows]
    seconds = time.perf_counter() - started
    engine.dispose()
    for g in groups:
        g[3] = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(g[3]))).isoformat()
    return {"query_s": round(seconds, 3), "groups": groups}


def _measured(args: list[str], label: str) -> dict[str, Any]:
    """Run this script's ``--side`` in a fresh process: its JSON (with its peak RSS), wall
    and CPU seconds."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, __file__, *args], stdout=out, stderr=err, text=True
        )
        _, status, usage = os.wait4(proc.pid, 0)  # CPU time; memory: _peak_rss_mib
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"{label} failed:\n{err.read()[-3000:]}")
        out.seek(0)
        result: dict[str, Any] = json.loads(out.read())
    result["process_wall_s"] = round(wall, 3)
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    return result


def _peak_rss_mib() -> float:
    """This process's peak resident memory since it started (``VmHWM``). Not ``wait4``'s
    figure: on Linux a child's ``ru_maxrss`` starts from its parent's size at the fork, and
    the parent here holds a day of generated traffic."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _agree(a: list[list[Any]], b: list[list[Any]]) -> dict[str, Any]:
    """Same groups, same counts, percentiles within 1e-9 (relative)."""
    index = {tuple(g[:4]): g for g in b}
    worst = 0.0
    mismatched = 0
    for g in a:
        other = index.get(tuple(g[:4]))
        if other is None or other[4] != g[4]:
            mismatched += 1
            continue
        for x, y in zip(g[5:8], other[5:8], strict=True):
            worst = max(worst, abs(x - y) / max(abs(y), 1e-12))
    return {
        "groups": len(a),
        "groups_other": len(b),
        "mismatched_groups": mismatched + abs(len(a) - len(b)),
        "max_relative_percentile_diff": worst,
        "agree": mismatched == 0 and len(a) == len(b) and worst < 1e-9,
    }


# -- one backend -------------------------------------------------------------------------


@contextmanager
def _place(backend: str, folder: Path) -> Iterator[str]:
    if backend == "postgresql":
        with harness.postgres_database("monitor") as url:
            yield url
    else:
        yield f"sqlite:///{folder}/conveyor.db"


def run_backend(backend: str, events: int, tail: int, log: Log, rounds: int = 3) -> dict[str, Any]:
    from conveyor.monitoring import compact
    from conveyor.project import Project, init_project

    with (
        tempfile.TemporaryDirectory(prefix="monitor-bench-") as tmp,
        _place(backend, Path(tmp)) as url,
    ):
        root = Path(tmp) / "project"
        init_project(root, name="monitor-bench")
        # The project's spec names its store and event log (one database), so the query's
        # fresh process opens the same ones.
        spec = root / "conveyor.yaml"
        spec.write_text(spec.read_text() + f"\nbackends:\n  store: {url}\n  events: {url}\n")
        generated = traffic(events)
        head = events - tail
        log(f"{backend}: appending {head:,} events")

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

        # Two workers' samples of the whole day first, so the tail is --tail predictions.
        day_us = int((DAY - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)
        import numpy as np

        sampled = _samples(day_us, day_us + 86_400_000_000, np.random.default_rng(7))
        fill(url, iter([sampled]), log)
        filled = fill(url, first(), log)
        log(f"{backend}: filled at {filled['events_per_s']:,} events/s; compacting")
        with Project.open(root) as project:
            done = compact(project)
        files_bytes = sum(
            p.stat().st_size for p in (root / ".conveyor/artifacts/events").rglob("*.parquet")
        )
        compaction = {
            "events": done.events,
            "files": done.files,
            "bytes": files_bytes,
            "seconds": round(done.seconds, 2),
            "events_per_s": round(done.events / done.seconds),
        }
        log(f"{backend}: compacted {done.events:,} at {compaction['events_per_s']:,} events/s")

        def remaining() -> Iterator[list[Any]]:
            if rest:
                yield rest
            yield from generated

        tail_fill = fill(url, remaining(), log)
        since, until = DAY, DAY + timedelta(days=1)
        window = ["--since", since.isoformat(), "--until", until.isoformat()]
        sides = [
            _measured(["--side", "parquet", "--target", str(root), *window], "parquet")
            for _ in range(rounds)
        ]
        parquet = {**sides[0], "rounds": rounds}
        for key in (
            "query_s",
            "again_s",
            "system_s",
            "system_again_s",
            "process_wall_s",
            "cpu_s",
            "peak_rss_mib",
        ):
            parquet[key] = statistics.median(side[key] for side in sides)
            parquet[f"{key}_all"] = [side[key] for side in sides]
        log(
            f"{backend}: Parquet + tail {parquet['query_s']} s (again {parquet['again_s']} s), "
            f"system {parquet['system_s']} s (again {parquet['system_again_s']} s), "
            f"process {parquet['process_wall_s']} s, {parquet['peak_rss_mib']} MiB"
        )
        plain = _measured(["--side", "plain", "--target", url, *window], "plain SQL")
        log(f"{backend}: plain SQL {plain['query_s']} s, {plain['peak_rss_mib']} MiB")
        agreement = _agree(parquet.pop("groups"), plain.pop("groups"))
        return {
            "events": head + tail_fill["events"],
            "fill": filled,
            "compaction": compaction,
            "tail_events": tail_fill["events"],
            "parquet_plus_tail": parquet,
            "plain_sql": plain,
            "agreement": agreement,
            "speedup": round(plain["query_s"] / parquet["query_s"], 1),
        }


def run(
    quick: bool = False,
    pythons: dict[str, Any] | None = None,  # no peer: the row store is the limit
    backends: tuple[str, ...] = BACKENDS,
    events: int | None = None,
    tail: int = 5_000,
    log: Log = print,
    rounds: int | None = None,
) -> dict[str, Any]:
    import duckdb
    import pyarrow

    n = events or (200_000 if quick else 10_000_000)
    result: dict[str, Any] = {
        "benchmark": "monitor_query",
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "versions": {"duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__},
        "events": n,
        "tail": tail,
        "window_s": WINDOW.total_seconds(),
        "results": {},
    }
    if "postgresql" in backends:
        result["postgresql"] = harness.postgres_version()
    name = "monitor_query" + ("-quick" if quick else "")
    for backend in backends:
        measured = run_backend(backend, n, tail, log, rounds or (1 if quick else 3))
        measured["timestamp"] = harness.timestamp()
        measured["git_commit"] = result["machine"]["git_commit"]
        result["results"][backend] = measured
    # A run on some backends keeps the others' figures from the file, when they are of the
    # same size (each carries its own timestamp and commit).
    earlier = harness.RESULTS / f"{name}.json"
    if earlier.exists():
        kept = json.loads(earlier.read_text())
        if kept.get("events") == n:
            for backend, figures in kept.get("results", {}).items():
                result["results"].setdefault(backend, figures)
    path = harness.write_result(name, result)
    result["path"] = str(path)
    log(f"wrote {path}")
    return result


def summary(result: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(
        title=f"monitor query: {result['events']:,} predictions (a day), latency by model, "
        f"version, arm and minute",
        title_justify="left",
    )
    for column in (
        "backend",
        "compaction ev/s",
        "Parquet+tail s",
        "again s",
        "system s",
        "process s",
        "peak RSS",
        "plain SQL s",
        "agree",
    ):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for backend, r in result["results"].items():
        fast = r["parquet_plus_tail"]
        table.add_row(
            backend,
            f"{r['compaction']['events_per_s']:,}",
            f"{fast['query_s']:.3f}",
            f"{fast['again_s']:.3f}",
            f"{fast.get('system_s', float('nan')):.3f}",
            f"{fast['process_wall_s']:.2f}",
            f"{fast['peak_rss_mib']:.0f} MiB",
            f"{r['plain_sql']['query_s']:.2f}",
            str(r["agreement"]["agree"]),
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, help="events in the day (default 10,000,000)")
    parser.add_argument("--tail", type=int, default=5_000, help="events left uncompacted")
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    parser.add_argument("--quick", action="store_true", help="200,000 events")
    parser.add_argument("--rounds", type=int, help="fresh query processes (default 3)")
    parser.add_argument("--side", choices=("parquet", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--since", help=argparse.SUPPRESS)
    parser.add_argument("--until", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        since, until = datetime.fromisoformat(args.since), datetime.fromisoformat(args.until)
        side = _side_parquet if args.side == "parquet" else _side_plain
        answer = side(args.target, since, until)
        answer["peak_rss_mib"] = _peak_rss_mib()
        print(json.dumps(answer))
        return
    result = run(
        args.quick,
        backends=tuple(args.backend or BACKENDS),
        events=args.events,
        tail=args.tail,
        rounds=args.rounds,
    )
    from rich.console import Console

    Console().print(summary(result))


if __name__ == "__main__":
    main()
