"""Model quality from feedback over a day: the DuckDB join against pandas on the row store.

    flock /tmp/conveyor-bench.lock nice -n 19 .venv/bin/python benchmarks/quality_query.py
    .venv/bin/python benchmarks/quality_query.py --events 200000

One SQLite project (store and event log):

1. **fill**: ``--events`` one-row predictions of a binary classifier (two probabilities
   per row) over a day, two versions as champion and canary, appended through the log's
   batch API; then feedback for ``--labelled`` of them (default 30%), 1% of those sent
   twice (the second wins), through :func:`conveyor.monitoring.record_feedback`;
2. **compaction** of everything (``conveyor events compact``);
3. **the report**: :func:`conveyor.monitoring.quality.quality_report` for the day in
   1-hour windows (seven metrics per version, arm and window), in a fresh process: the
   call's time (first, and again), the process's peak RSS;
4. **the limit it beats**: the same from the row store without the columnar copy, in a
   fresh process: every prediction and feedback event read by SQL, payloads parsed,
   joined and deduplicated with pandas, and the same metrics (``conveyor.checks.metrics``)
   per group. Both answers are compared window by window (1e-9).

Results go to ``results/quality_query.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DAY = datetime(2026, 12, 2, tzinfo=UTC)
WINDOW = timedelta(hours=1)
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "calibration_error")
RESULTS = Path(__file__).resolve().parent / "results" / "quality_query.json"


def fill(root: Path, events: int, labelled: float, seed: int) -> dict[str, Any]:
    from conveyor.events.schema import Event
    from conveyor.monitoring import compact, record_feedback
    from conveyor.project import Project, init_project

    init_project(root, name="graded")
    rng = random.Random(seed)
    step = 86_400 / events
    out: dict[str, Any] = {"events": events}
    with Project.open(root, env={}) as project:
        started = time.perf_counter()
        batch: list[Event] = []
        feedback: list[dict[str, Any]] = []
        for i in range(events):
            p = rng.betavariate(0.5, 0.5)
            version, arm = ("3", "champion") if rng.random() < 0.9 else ("4", "canary")
            rid = f"r{i}"
            batch.append(
                Event(
                    "prediction",
                    subject="fraud",
                    subject_version=version,
                    request_id=rid,
                    time=DAY + timedelta(seconds=i * step),
                    payload={
                        "version_id": f"fraud-v{version}",
                        "arm": arm,
                        "flag": None,
                        "latency_ms": 2.0,
                        "cached": False,
                        "rows": 1,
                        "output": [[round(1 - p, 6), round(p, 6)]],
                    },
                )
            )
            if rng.random() < labelled:
                y = int(rng.random() < p)
                if rng.random() < 0.01:
                    feedback.append({"request_id": rid, "label": 1 - y})  # overwritten
                feedback.append({"request_id": rid, "label": y})
            if len(batch) == 5_000:
                project.events.append_many(batch)
                batch = []
        project.events.append_many(batch)
        project.events.flush()
        out["fill_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        for start in range(0, len(feedback), 50_000):
            record_feedback(project, feedback[start : start + 50_000], source="benchmark")
        out["feedback_records"] = len(feedback)
        out["feedback_s"] = round(time.perf_counter() - started, 2)
        out["feedback_per_s"] = round(len(feedback) / (time.perf_counter() - started))
        done = compact(project)
        out["compaction"] = {
            "events": done.events,
            "files": done.files,
            "s": round(done.seconds, 2),
        }
    return out


def side_conveyor(root: str) -> dict[str, Any]:
    from conveyor.monitoring.quality import quality_report
    from conveyor.project import Project

    with Project.open(Path(root), env={}) as project:
        started = time.perf_counter()
        report = quality_report(
            project, "fraud", since=DAY, until=DAY + timedelta(days=1), window=WINDOW
        )
        first = time.perf_counter() - started
        started = time.perf_counter()
        quality_report(project, "fraud", since=DAY, until=DAY + timedelta(days=1), window=WINDOW)
        again = time.perf_counter() - started
    return {
        "first_s": round(first, 3),
        "again_s": round(again, 3),
        "peak_rss_mib": _peak_rss_mib(),
        "windows": report.windows,
        "joined": report.feedback["joined"],
    }


def side_plain(root: str) -> dict[str, Any]:
    """Row store + pandas: what a team without the columnar copy would write."""
    import numpy as np
    import orjson
    import pandas as pd

    from conveyor.checks.metrics import metric
    from conveyor.project import Project

    started = time.perf_counter()
    with Project.open(Path(root), env={}) as project:
        rows = project.events.scan(after=0)  # type: ignore[attr-defined]
    preds, labels = [], []
    for seq, _id, time_us, kind, subject, version, request_id, _t, _a, payload in rows:
        if kind == "prediction" and subject == "fraud":
            body = orjson.loads(payload)
            preds.append((request_id, version, body["arm"], time_us, body["output"][0][1]))
        elif kind == "feedback":
            body = orjson.loads(payload)
            labels.append((seq, request_id, body["row"], body["label"]))
    p = pd.DataFrame(preds, columns=["request_id", "version", "arm", "time_us", "score"])
    f = pd.DataFrame(labels, columns=["seq", "request_id", "row", "label"])
    f = f.sort_values("seq").drop_duplicates(["request_id", "row"], keep="last")
    joined = f.merge(p, on="request_id")
    width = WINDOW // timedelta(microseconds=1)
    joined["window"] = joined["time_us"] // width * width
    windows = []
    for (version, arm, window), g in joined.groupby(["version", "arm", "window"]):
        y, s = g["label"].to_numpy(), g["score"].to_numpy()
        row = {"version": version, "arm": arm, "window_us": int(window), "labelled": len(g)}
        for name in METRICS:
            m = metric(name)
            row[name] = float(m(y, s) if m.needs == "score" else m(y, (s >= 0.5).astype(np.int64)))
        windows.append(row)
    return {
        "first_s": round(time.perf_counter() - started, 3),
        "peak_rss_mib": _peak_rss_mib(),
        "windows": windows,
    }


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _measured(*args: str) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result: dict[str, Any] = json.loads(done.stdout)
    result["process_wall_s"] = round(time.perf_counter() - started, 3)
    return result


def _agree(ours: list[dict[str, Any]], plain: list[dict[str, Any]]) -> dict[str, Any]:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    index = {(w["version"], w["arm"], w["window_us"]): w for w in plain}
    worst, compared = 0.0, 0
    for w in ours:
        if not w["labelled"]:
            continue
        start = int((datetime.fromisoformat(w["window"]) - epoch) // timedelta(microseconds=1))
        other = index[(w["version"], w["arm"], start)]
        assert other["labelled"] == w["labelled"], (w, other)
        for name in METRICS:
            a, b = w[name], other[name]
            worst = max(worst, abs(a - b) / max(abs(b), 1e-12))
        compared += 1
    return {"groups": compared, "plain_groups": len(plain), "max_relative_difference": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--labelled", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--side", choices=("conveyor", "plain"))
    parser.add_argument("--root")
    args = parser.parse_args()
    if args.side:
        side = side_conveyor if args.side == "conveyor" else side_plain
        print(json.dumps(side(args.root)))
        return
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "proj"
        result: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds")}
        result["fill"] = fill(root, args.events, args.labelled, args.seed)
        print("filled:", json.dumps(result["fill"]), flush=True)
        ours = _measured("--side", "conveyor", "--root", str(root))
        plain = _measured("--side", "plain", "--root", str(root))
        result["agreement"] = _agree(ours.pop("windows"), plain.pop("windows"))
        result["conveyor"], result["plain_row_store_pandas"] = ours, plain
    result["machine"] = {"cpus": os.cpu_count()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
