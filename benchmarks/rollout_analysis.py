"""The rollout controller's analysis of one step over 1M events (target: under 1 s).

    flock /tmp/conveyor-bench.lock nice -n 10 .venv/bin/python benchmarks/rollout_analysis.py

One project (SQLite store and event log), one model ``m`` with a stable (v1) and a
canary (v2) arm: ``--events`` requests (default 1,000,000) over a one-hour step, 95 % to
the stable version and 5 % to the canary, 1 % of them failed (``prediction.failed``), the
rest answered (``prediction``, with latency and output), appended through the log's
batch API and compacted into the columnar copy (Parquet) but for the last ``--tail``
events, which stay in the log as a live server leaves them between compactions.

Then what the controller does to judge the step, timed in this process (``--rounds``
times; the first call includes DuckDB's and SciPy's imports):
:func:`conveyor.rollouts.sampling.read_arms` (one DuckDB pass: per-arm counts of
requests and 5xx, and every answered request's latency and first output as arrays) and
:func:`conveyor.rollouts.analysis.analyze` (the exact tests, PSI). Results go to
``results/rollout_analysis.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
STEP = timedelta(hours=1)


def traffic(n: int, *, seed: int = 5, chunk: int = 50_000) -> Iterator[list[Any]]:
    """``n`` requests over the step, in time order, by chunks."""
    import numpy as np

    from conveyor.events.schema import EPOCH, Event

    rng = np.random.default_rng(seed)
    start_us = int((START - EPOCH).total_seconds() * 1_000_000)
    times = np.sort(rng.integers(start_us, start_us + int(STEP.total_seconds() * 1e6), n))
    for first in range(0, n, chunk):
        size = min(chunk, n - first)
        canary = rng.uniform(0, 1, size) < 0.05
        failed = rng.uniform(0, 1, size) < 0.01
        latency = rng.lognormal(np.log(20), 0.4, size).round(3)
        outs = rng.beta(2, 5, size).round(4)
        events = []
        for i in range(size):
            version = "2" if canary[i] else "1"
            at = EPOCH + timedelta(microseconds=int(times[first + i]))
            if failed[i]:
                kind = "prediction.failed"
                payload: dict[str, Any] = {
                    "status": 500,
                    "code": "internal",
                    "version_id": f"m-v{version}",
                    "arm": f"v{version}",
                    "latency_ms": float(latency[i]),
                }
            else:
                kind = "prediction"
                payload = {
                    "version_id": f"m-v{version}",
                    "arm": f"v{version}",
                    "flag": None,
                    "latency_ms": float(latency[i]),
                    "cached": False,
                    "rows": 1,
                    "output": [float(outs[i])],
                }
            events.append(
                Event(kind, subject="m", subject_version=version, payload=payload, time=at)
            )
        yield events


def run(events: int, tail: int, rounds: int, log: Any = print) -> dict[str, Any]:
    from conveyor.monitoring import compact
    from conveyor.project import Project, init_project
    from conveyor.rollouts.analysis import analyze
    from conveyor.rollouts.sampling import read_arms
    from conveyor.rollouts.settings import AnalysisSpec

    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        root = Path(tmp) / "project"
        init_project(root, name="rollout-bench")
        log(f"appending {events:,} events")
        started = time.perf_counter()
        flat_tail: list[Any] = []
        with Project.open(root, env={}) as project:
            left = events - tail
            for chunk in traffic(events):
                head, rest = chunk[: max(left, 0)], chunk[max(left, 0) :]
                if head:
                    project.events.append_many(head)
                left -= len(head)
                flat_tail += rest
            project.events.flush()
        fill_s = time.perf_counter() - started
        log(f"filled in {fill_s:.1f} s; compacting")
        with Project.open(root, env={}) as project:
            started = time.perf_counter()
            done = compact(project)
            compact_s = time.perf_counter() - started
            project.events.append_many(flat_tail)
            project.events.flush()
            log(f"compacted {done.events:,} in {compact_s:.1f} s; {len(flat_tail):,} in the tail")
            spec = AnalysisSpec()
            timings = []
            verdict = None
            arms: dict[str, Any] = {}
            for _ in range(rounds):
                t0 = time.perf_counter()
                canary, stable = read_arms(
                    project, "m", stable=1, candidate=2, since=START, until=START + STEP
                )
                t1 = time.perf_counter()
                judged = analyze(canary, stable, spec)
                t2 = time.perf_counter()
                timings.append({"read_s": t1 - t0, "analyze_s": t2 - t1, "total_s": t2 - t0})
                verdict = judged.outcome
                arms = {"canary": canary.to_dict(), "stable": stable.to_dict()}
            log(f"analysis: {[round(t['total_s'], 3) for t in timings]} s ({verdict})")
    warm = [t["total_s"] for t in timings[1:]] or [timings[0]["total_s"]]
    return {
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "events": events,
        "tail_events": tail,
        "fill_s": round(fill_s, 2),
        "compaction_s": round(compact_s, 2),
        "rounds": [{k: round(v, 4) for k, v in t.items()} for t in timings],
        "first_s": round(timings[0]["total_s"], 4),
        "warm_median_s": round(statistics.median(warm), 4),
        "target_s": 1.0,
        "verdict": verdict,
        "arms": arms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=5_000, help="events left uncompacted")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = run(args.events, args.tail, args.rounds)
    out = Path(__file__).resolve().parent / "results" / "rollout_analysis.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("first_s", "warm_median_s", "verdict")}))


if __name__ == "__main__":
    main()
