"""Shadow analysis benchmark: ``shadow_analysis`` over many shadow copies.

    flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/shadow_analysis.py
    .venv/bin/python benchmarks/shadow_analysis.py --copies 200000 --rows 4

A regression model's ``--copies`` requests of ``--rows`` rows, each with a
``prediction`` event and two ``prediction.shadow`` events (a noisy version, an exact
copy), an hour of traffic, written to a SQLite log and compacted into the columnar
copy but for the last 5,000 requests (the tail). Then one analysis of both shadow
versions, timed twice (the first call in the process, and again). Writes
``benchmarks/results/shadow_analysis.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "shadow_analysis.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=1)
    args = parser.parse_args()

    from conveyor.events.schema import Event
    from conveyor.monitoring.compaction import compact
    from conveyor.monitoring.shadow_analysis import shadow_analysis
    from conveyor.project import Project, init_project

    rng = random.Random(1)
    start = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    step = 3600 / args.copies
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "proj"
        init_project(root, name="bench")
        with Project.open(root, env={}) as project:
            written = time.perf_counter()
            tail_from = args.copies - 5000
            batch: list[Event] = []
            for i in range(args.copies):
                at = start + timedelta(seconds=i * step)
                xs = [rng.gauss(0, 1) for _ in range(args.rows)]
                ys = [3 * x for x in xs]
                request = f"r{i}"
                batch.append(
                    Event(
                        "prediction",
                        subject="house",
                        subject_version="1",
                        request_id=request,
                        time=at,
                        payload={
                            "version_id": "v1",
                            "arm": "direct",
                            "flag": None,
                            "latency_ms": rng.lognormvariate(0.7, 0.4),
                            "cached": False,
                            "rows": args.rows,
                            "output": ys,
                        },
                    )
                )
                for version, out in (("2", [y + rng.gauss(0.5, 0.1) for y in ys]), ("3", ys)):
                    batch.append(
                        Event(
                            "prediction.shadow",
                            subject="house",
                            subject_version=version,
                            request_id=request,
                            time=at + timedelta(milliseconds=3),
                            payload={
                                "primary_version": 1,
                                "primary_output": ys,
                                "output": out,
                                "agree": version == "3",
                                "compared": args.rows,
                                "differing": 0 if version == "3" else args.rows,
                                "max_abs_diff": None,
                                "mean_abs_diff": None,
                                "status": "ok",
                                "error": None,
                                "latency_ms": rng.lognormvariate(1.0, 0.4),
                                **({"input": [{"x": x} for x in xs]} if version == "2" else {}),
                            },
                        )
                    )
                if len(batch) >= 30_000 or i == tail_from:
                    project.events.append_many(batch)
                    project.events.flush()
                    batch = []
                    if i == tail_from:
                        compact(project)
            project.events.append_many(batch)
            project.events.flush()
            written_s = time.perf_counter() - written
            timings = []
            for _ in range(2):
                began = time.perf_counter()
                analysis = shadow_analysis(
                    project, "house", since=start, until=start + timedelta(hours=2)
                )
                timings.append(time.perf_counter() - began)
            noisy = analysis.version(2)
            result = {
                "copies": args.copies,
                "rows_per_request": args.rows,
                "shadow_events": 2 * args.copies,
                "events_in_window": 3 * args.copies,
                "tail_events": analysis.read["tail_events"],
                "files": analysis.read["files"],
                "write_and_compact_s": round(written_s, 2),
                "first_call_s": round(timings[0], 3),
                "again_s": round(timings[1], 3),
                "noisy_mean_difference": noisy.differences["mean"] if noisy.differences else None,
                "noisy_agreement": noisy.agreement_rate,
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
