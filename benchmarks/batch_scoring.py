"""Batch scoring benchmark: ``score_batch`` (local engine, and Ray Data) against the peers.

    flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/batch_scoring.py
    .venv/bin/python benchmarks/batch_scoring.py --rows 10000000 --model rf --ray

The serving benchmark's models (``benchmarks/peers/serving_workload.py``: the
LogisticRegression, or with ``--model rf`` the RandomForest of 100 trees), fitted on
a pandas frame of f0..f19, score ``--rows`` seeded rows stored as Parquet files of
``--file-rows`` rows (one row group each), written to a Parquet folder. Every side
runs as its own process (``os.wait4``: wall seconds, CPU seconds, the peak RSS of the
largest process) and in the same run:

- ``conveyor``: ``score_batch(project, "lr@1", input=..., output=..., workers=N)``:
  spawned workers, each loading the version through the registry, row checks
  against the signature, atomic partition files, the manifest and the run record;
- ``conveyor-inprocess``: the same with ``workers=0`` (scored in the calling process:
  no worker start-up, one core);
- ``conveyor-ray`` (``--ray``): the same with ``engine="ray"`` on a local Ray;
- ``pandas``: the loop a user would write: per file ``read_parquet``,
  ``model.predict``, ``to_parquet``, one process;
- ``ray-plain`` (``--ray``): ``ray.data.read_parquet(...).map_batches(predict)
  .write_parquet(...)``, the model called directly: the limit for the Ray engine.

Peak memory is the largest peak RSS of the side's process and of the workers it
started and reaped (a Ray side's raylet workers are not its children: theirs is not
counted). Every side's output is read back and its predictions compared with the model's own
on the same rows (a side that answers something else fails the run). Rows/s is
rows over the side's scoring seconds (what it reports; a Ray side's includes
starting Ray, which a user pays too); ``wall_seconds`` adds interpreter start-up
and (Conveyor) the project set-up. Writes ``benchmarks/results/batch_scoring.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))


def _features() -> list[str]:
    import serving_workload as wl

    return list(wl.FEATURES)


def _model(kind: str) -> Any:
    import serving_workload as wl

    return wl.fit(kind, frame=True)


# -- the sides (each runs in its own process) ---------------------------------------------


def side_conveyor(data: Path, out: Path, kind: str, workers: int, engine: str) -> dict[str, Any]:
    import pandas as pd
    import serving_workload as wl

    from conveyor.project import Project, init_project
    from conveyor.scoring import score_batch

    root = out.parent / f"project-{engine}-{workers}"
    init_project(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    with Project.open(root, env=env) as project:
        rows, _ = wl.training_rows()
        frame = pd.DataFrame(rows, columns=wl.FEATURES)
        project.registry.register(kind, _model(kind), signature_from=frame)
        started = time.perf_counter()
        result = score_batch(
            project, f"{kind}@1", input=str(data), output=str(out), workers=workers, engine=engine
        )
        seconds = time.perf_counter() - started
    return {"rows": result.rows, "seconds": seconds, "partitions": result.partitions}


def side_pandas(data: Path, out: Path, kind: str) -> dict[str, Any]:
    import pandas as pd

    model = _model(kind)
    features = _features()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = 0
    for path in sorted(data.glob("*.parquet")):
        frame = pd.read_parquet(path)
        frame["prediction"] = model.predict(frame[features])
        frame.to_parquet(out / path.name, index=False)
        rows += len(frame)
    return {"rows": rows, "seconds": time.perf_counter() - started}


def side_ray_plain(data: Path, out: Path, kind: str, workers: int) -> dict[str, Any]:
    import ray
    import ray.data

    model = _model(kind)
    features = _features()
    started = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)

    def predict(batch: Any) -> Any:
        batch["prediction"] = model.predict(batch[features])
        return batch

    dataset = ray.data.read_parquet(str(data)).map_batches(
        predict, batch_format="pandas", concurrency=workers
    )
    dataset.write_parquet(str(out))
    seconds = time.perf_counter() - started
    ray.shutdown()
    return {"rows": _rows_in(out), "seconds": seconds}


def _peak_rss_mib() -> float:
    """The largest peak RSS of this process (VmHWM: fresh at exec, unlike ru_maxrss,
    which keeps the forking parent's) and of its reaped children (the workers)."""
    import resource

    own = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            own = int(line.split()[1]) / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(max(own, children), 1)


def _rows_in(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in folder.rglob("*.parquet"))


# -- the run -------------------------------------------------------------------------------


def make_input(folder: Path, rows: int, file_rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    features = _features()
    rng = np.random.default_rng(11)
    for index, start in enumerate(range(0, rows, file_rows)):
        n = min(file_rows, rows - start)
        values = rng.normal(size=(n, len(features)))
        columns = {"id": np.arange(start, start + n, dtype=np.int64)}
        columns.update({name: values[:, i] for i, name in enumerate(features)})
        pq.write_table(pa.table(columns), folder / f"{index:05d}.parquet", row_group_size=n)


def check(out: Path, data: Path, kind: str, label: str) -> None:
    """The side's predictions are the model's own on the same rows (a sample of files)."""
    import numpy as np
    import pyarrow.dataset as ds

    model = _model(kind)
    features = _features()
    scored = ds.dataset(
        [str(p) for p in out.rglob("*.parquet") if "rejected" not in p.parts],
        format="parquet",
    ).to_table(columns=["id", "prediction"])
    scored = scored.sort_by("id")
    source = ds.dataset(str(data), format="parquet").to_table().sort_by("id")
    if scored.num_rows != source.num_rows:
        raise RuntimeError(f"{label}: {scored.num_rows} rows out, {source.num_rows} in")
    sample = np.linspace(0, source.num_rows - 1, 20_000).astype(np.int64)
    want = model.predict(source.take(sample).select(features).to_pandas())
    got = scored.take(sample).column("prediction").to_numpy()
    if not np.array_equal(want, got):
        raise RuntimeError(f"{label}: predictions differ from the model's own")


def run_side(args: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"side {args[1]} failed:\n{err[-4000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["wall_seconds"] = round(wall, 3)
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    result["rows_per_s"] = round(result["rows"] / result["seconds"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--file-rows", type=int, default=100_000)
    parser.add_argument("--model", choices=("lr", "rf"), default="lr")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--ray", action="store_true", help="also the Ray sides")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        if args.side == "conveyor":
            found = side_conveyor(args.data, args.out, args.model, args.workers, "local")
        elif args.side == "conveyor-inprocess":
            found = side_conveyor(args.data, args.out, args.model, 0, "local")
        elif args.side == "conveyor-ray":
            found = side_conveyor(args.data, args.out, args.model, args.workers, "ray")
        elif args.side == "pandas":
            found = side_pandas(args.data, args.out, args.model)
        else:
            found = side_ray_plain(args.data, args.out, args.model, args.workers)
        found["peak_rss_mib"] = _peak_rss_mib()
        print(json.dumps(found))
        return

    import harness

    sides = ["conveyor", "conveyor-inprocess", "pandas"] + (
        ["conveyor-ray", "ray-plain"] if args.ray else []
    )
    work = Path(tempfile.mkdtemp(prefix="conveyor-batch-bench-"))
    results: dict[str, Any] = {}
    try:
        data = work / "input"
        t = time.perf_counter()
        make_input(data, args.rows, args.file_rows)
        print(f"input: {args.rows:,} rows in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        for side in sides:
            out = work / f"out-{side}"
            load = os.getloadavg()[0]
            common = ["--data", str(data), "--out", str(out), "--model", args.model]
            found = run_side(["--side", side, *common, "--workers", str(args.workers)])
            found["load_before"] = round(load, 2)
            check(out, data, args.model, side)
            results[side] = found
            print(f"{side}: {json.dumps(found)}", file=sys.stderr)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = {
        "conveyor_vs_pandas": round(
            results["conveyor"]["rows_per_s"] / results["pandas"]["rows_per_s"], 3
        )
    }
    if "ray-plain" in results:
        ratios["conveyor_ray_vs_ray_plain"] = round(
            results["conveyor-ray"]["rows_per_s"] / results["ray-plain"]["rows_per_s"], 3
        )
    name = (
        "batch_scoring"
        if args.model == "lr" and args.rows == 1_000_000
        else (f"batch_scoring-{args.model}-{args.rows}")
    )
    path = harness.write_result(
        name,
        {
            "benchmark": "batch_scoring",
            "at": harness.timestamp(),
            "machine": harness.machine(),
            "model": args.model,
            "rows": args.rows,
            "file_rows": args.file_rows,
            "workers": args.workers,
            "sides": results,
            "ratios": ratios,
        },
    )
    print(path)


if __name__ == "__main__":
    main()
