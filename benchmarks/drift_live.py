"""Live drift: one day of sampled prediction inputs (1M rows, 20 features) against the
model's training data, Conveyor's drift job against Evidently's report on the same data.

    flock /tmp/conveyor-bench.lock nice -n 5 .venv/bin/python benchmarks/drift_live.py
    .venv/bin/python benchmarks/drift_live.py --rows 100000 --no-evidently   # quick

Setup (cached under the temp folder, not timed): a project on SQLite with a data set
``ref`` of ``--rows`` rows (15 continuous features, 5 with five values, a label), a
logistic regression ``m`` trained on it (registered with that data set version as its
lineage, promoted to champion), and one day of ``--rows`` ``prediction`` events as the
server writes them with ``serving.payload_sample_rate`` on (one row each, its ``input``
and ``output``), compacted into the Parquet copy but for the last 5,000 (the tail). Four
features move in the live day: f00 by 0.1 sd, f01's spread by 10%, c15's distribution,
and f02 by 0.01 sd (below the floor).

Timed, each side as a whole fresh process (interpreter start, imports, reading, the
tests), wall time and peak RSS from ``wait4`` (harness.measure_process):

- **Conveyor** (``peers/conveyor_drift_live.py``): ``live_drift`` as the scheduled job
  runs it: the sampled rows read from the event log's copy and tail with DuckDB, the
  training data read from the data layer, the model run on it (prediction drift), the
  drift tests on inputs and predictions, the CBPE estimate, the report saved and the
  events recorded. One **cold** round (the per-file cache of parsed payloads cleared:
  every payload of the day parsed), then three **warm** rounds (the copy's files already
  parsed, as an hourly job over the last day finds all but the newest hour), the median;
  with ``--again`` each process also runs the check a second time, the cost per run in a
  long-lived scheduler (imports and the model's library already loaded), written to
  ``results/drift_live-again.json``.
- **Evidently** (``peers/evidently_drift.py``, ``.bench-venvs/evidently``):
  ``Report([DataDriftPreset()])`` with its defaults on the same two frames, given as
  Parquet files (the reference's features and the live rows exactly as Conveyor read
  them; Evidently does not read an event log, so extracting the rows is not in its time).
  One round.

Results go to ``results/drift_live.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness

# Evidently is one of harness.PEERS (its own virtualenv, pandas<3).

GENERATOR_VERSION = 1
SEED = 20261204
DAY = datetime(2026, 12, 3, tzinfo=UTC)
TAIL = 5_000
NUMERIC = [f"f{i:02d}" for i in range(15)]
COUNTED = [f"c{i}" for i in range(15, 20)]
FEATURES = NUMERIC + COUNTED
PLANTED = {"f00": "mean +0.1 sd", "f01": "spread x1.1", "c15": "categories moved"}
SUBTLE = {"f02": "mean +0.01 sd (below the floor)"}


def frame(rows: int, seed: int, live: bool) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(NUMERIC)))
    if live:
        x[:, 0] += 0.1
        x[:, 1] *= 1.1
        x[:, 2] += 0.01
    probs = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
    counted = np.empty((rows, len(COUNTED)), dtype=np.int64)
    for j in range(len(COUNTED)):
        p = np.array([0.3, 0.3, 0.15, 0.15, 0.1]) if (live and j == 0) else probs
        counted[:, j] = rng.choice(5, size=rows, p=p)
    w = np.linspace(1.0, 0.1, len(FEATURES))
    z = np.column_stack([x, counted - 1.0]) @ w * 0.5
    label = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(np.int64)
    columns = {n: x[:, i] for i, n in enumerate(NUMERIC)}
    columns.update({n: counted[:, j] for j, n in enumerate(COUNTED)})
    if not live:
        columns["label"] = label
    return pa.table(columns)


def build(rows: int, log: Any = print) -> Path:
    """The project folder, generated once per size and cached."""
    folder = (
        Path(tempfile.gettempdir()) / "conveyor-bench" / f"drift_live-v{GENERATOR_VERSION}-{rows}"
    )
    done = folder / "READY"
    if done.exists():
        return folder
    import shutil

    import numpy as np

    from conveyor.events.schema import Event
    from conveyor.monitoring.compaction import compact
    from conveyor.project import Project, init_project

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    init_project(folder, name="drift-live-bench")
    with (folder / "conveyor.yaml").open("a") as spec:
        spec.write(
            "datasets:\n  ref: {}\nmodels:\n  m:\n    train: trainer:fit\n    dataset: ref\n"
            f"    features: [{', '.join(FEATURES)}]\n    target: label\n"
        )
    reference = frame(rows, SEED, live=False)
    live = frame(rows, SEED + 1, live=True)
    with Project.open(folder, env={}) as project:
        log(f"drift_live: ingesting the reference, {rows:,} rows")
        version = project.data.ingest("ref", reference).version
        from sklearn.linear_model import LogisticRegression

        X = reference.select(FEATURES).to_pandas()
        model = LogisticRegression(max_iter=200).fit(X, reference.column("label").to_numpy())
        registered = project.registry.register(
            "m", model, signature_from=X.head(1000), dataset_versions=[version]
        )
        project.registry.promote(
            "m", registered.number, actor="bench", force=True, reason="benchmark"
        )
        outputs = model.predict(live.select(FEATURES).to_pandas())
        log(f"drift_live: writing {rows:,} prediction events with sampled inputs")
        step = timedelta(days=1) / rows
        records = live.to_pylist()
        rng = np.random.default_rng(SEED)
        latencies = rng.lognormal(0.7, 0.5, rows).round(3)
        batch: list[Event] = []
        for i, row in enumerate(records):
            batch.append(
                Event(
                    "prediction",
                    subject="m",
                    subject_version="1",
                    request_id=f"req-{i}",
                    actor="key:gateway",
                    time=DAY + step * i,
                    payload={
                        "version_id": registered.id,
                        "arm": "champion",
                        "flag": None,
                        "latency_ms": float(latencies[i]),
                        "cached": False,
                        "rows": 1,
                        "output": [int(outputs[i])],
                        "input": [row],
                    },
                )
            )
            if len(batch) == 20_000 or i in (rows - TAIL - 1, rows - 1):
                project.events.append_many(batch)
                batch = []
            if i == rows - TAIL - 1:
                project.events.flush()
                log("drift_live: compacting")
                copied = compact(project)
                log(f"drift_live: {copied.events:,} events in {copied.seconds:.1f} s")
        project.events.flush()
    live.select(FEATURES).to_pandas().to_parquet(folder / "current.parquet")
    reference.select(FEATURES).to_pandas().to_parquet(folder / "reference.parquet")
    done.write_text("ok")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="live and reference rows")
    parser.add_argument(
        "--rounds", type=int, default=3, help="warm Conveyor rounds after the cold one"
    )
    parser.add_argument("--no-evidently", action="store_true", help="skip Evidently")
    parser.add_argument(
        "--again",
        action="store_true",
        help="each Conveyor process runs the check a second time (a long-lived scheduler)",
    )
    args = parser.parse_args()
    folder = build(args.rows)
    since, until = DAY.isoformat(), (DAY + timedelta(days=1)).isoformat()
    # The first run parses every payload (no cache of the copy's files yet): the cold
    # figure; the next ones find the parsed files (as an hourly job over the last day does
    # for all but the newest hour): the warm figure.
    import shutil

    shutil.rmtree(folder / ".conveyor" / "artifacts" / "cache" / "drift_live", ignore_errors=True)
    conveyor_runs = []
    for round_ in range(1 + args.rounds):
        run = harness.measure_process(
            Path(sys.executable),
            "conveyor_drift_live.py",
            [str(folder), since, until, *(["again"] if args.again else [])],
            label="conveyor",
        )
        run["cache"] = "cold" if round_ == 0 else "warm"
        print(
            f"conveyor {run['cache']} round {round_ + 1}: {run['wall_seconds']:.2f} s wall, "
            f"{run['cpu_seconds']:.2f} s CPU (check {run['check_seconds']:.2f} s: "
            + ", ".join(f"{k} {v:.2f}" for k, v in run["check_phases"].items())
            + f"), peak {run['peak_rss_bytes'] / 2**20:,.0f} MiB; drifted {run['drifted']}"
            + (
                f"; again in the same process {run['again_seconds']:.2f} s"
                if run["again_seconds"] is not None
                else ""
            )
        )
        conveyor_runs.append(run)
    cold, warm = conveyor_runs[0], conveyor_runs[1:]
    result: dict[str, Any] = {
        "rows": args.rows,
        "features": len(FEATURES),
        "planted": PLANTED,
        "subtle": SUBTLE,
        "tail_events": TAIL,
        "conveyor": {
            "runs": conveyor_runs,
            "cold_wall_seconds": cold["wall_seconds"],
            "cold_cpu_seconds": cold["cpu_seconds"],
            "cold_check_seconds": cold["check_seconds"],
            "wall_seconds_median": statistics.median(r["wall_seconds"] for r in warm),
            "cpu_seconds_median": statistics.median(r["cpu_seconds"] for r in warm),
            "check_seconds_median": statistics.median(r["check_seconds"] for r in warm),
            "again_seconds_median": (
                statistics.median(r["again_seconds"] for r in warm) if args.again else None
            ),
            "peak_rss_mib_max": max(r["peak_rss_bytes"] for r in conveyor_runs) / 2**20,
        },
        "at": datetime.now(UTC).isoformat(),
        "python": sys.version.split()[0],
    }
    if not args.no_evidently:
        python = harness.ensure_venv("evidently")
        run = harness.measure_process(
            python,
            "evidently_drift.py",
            [str(folder / "reference.parquet"), str(folder / "current.parquet")],
            label="evidently",
        )
        print(
            f"evidently: {run['wall_seconds']:.2f} s wall, {run['cpu_seconds']:.2f} s CPU, peak "
            f"{run['peak_rss_bytes'] / 2**20:,.0f} MiB; drifted {run['drifted']}"
        )
        result["evidently"] = {
            **{k: v for k, v in run.items() if k != "columns"},
            "peak_rss_mib": run["peak_rss_bytes"] / 2**20,
            "columns": run.get("columns"),
        }
        result["conveyor_vs_evidently_speedup"] = {
            "cold": run["wall_seconds"] / cold["wall_seconds"],
            "warm": run["wall_seconds"] / result["conveyor"]["wall_seconds_median"],
        }
    name = "drift_live" if args.rows == 1_000_000 else f"drift_live-{args.rows}"
    out = Path(__file__).parent / "results" / f"{name}{'-again' if args.again else ''}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
