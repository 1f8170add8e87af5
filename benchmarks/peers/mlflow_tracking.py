"""MLflow's side of the tracking benchmark; runs in .bench-venvs/mlflow, prints JSON.

    python mlflow_tracking.py --tracking-uri sqlite:////tmp/x/mlflow.db \
        --workdir /tmp/x --sizes '{"runs": 500, ...}'

It imports nothing from Conveyor: only MLflow and the shared, standard-library
``workload`` module next to it. Every timed region starts after the store
exists (MLflow migrates a fresh database on its first call).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from workload import (
    KIB,
    MIB,
    Sizes,
    check_size,
    emit_result,
    latency,
    listing_result,
    metric_point,
    rate,
    run_metrics,
    run_params,
    stopwatch,
    timed_calls,
    write_files,
)

API = {
    "runs": "MlflowClient.create_run + log_batch(params, metrics) + set_terminated (3 calls)",
    "list": "MlflowClient.search_runs(max_results=page, page_token=...)",
    "points_committed": "MlflowClient.log_metric(run_id, key, value, step=...) per point",
    "points_background": "MlflowClient.log_metric(..., synchronous=False) per point, then "
    "store.flush_async_logging()",
    "points_background_buffered": "the same with MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1",
    "points_batch": "MlflowClient.log_batch(metrics=[1,000 Metric])",
    "artifacts": "MlflowClient.log_artifact / download_artifacts, local file:// artifact root",
    "artifacts_dir": "MlflowClient.log_artifacts / download_artifacts of a whole folder",
}

_BUFFERING = "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"


class Bench:
    """One MLflow tracking store and the experiments the workloads write to."""

    def __init__(self, uri: str, workdir: Path, sizes: Sizes) -> None:
        self.workdir = workdir
        self.sizes = sizes
        self.client = MlflowClient(tracking_uri=uri)
        root = (workdir / "mlflow-artifacts").as_uri()
        # The first call creates the schema (MLflow's migrations): outside every timed region.
        self.runs_exp = self.client.create_experiment("bench-runs", artifact_location=root)
        self.train_exp = self.client.create_experiment("bench-train", artifact_location=root)

    def _now_ms(self) -> int:
        return int(time.time() * 1000)

    def _train_run(self, name: str) -> str:
        return self.client.create_run(self.train_exp, run_name=name).info.run_id

    # -- runs and listing ----------------------------------------------------

    def runs(self) -> dict[str, Any]:
        s, client = self.sizes, self.client

        def one_run(i: int) -> None:
            run_id = client.create_run(self.runs_exp, run_name=f"run-{i}").info.run_id
            ts = self._now_ms()
            metrics = [Metric(k, v, ts, 0) for k, v in run_metrics(i, s.metrics).items()]
            params = [Param(k, v) for k, v in run_params(i, s.params).items()]
            client.log_batch(run_id, metrics=metrics, params=params)
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

        total, per_run = timed_calls(one_run, s.runs)
        return {**rate(s.runs, [total]), "per_run": latency(per_run), "api": API["runs"]}

    def list_runs(self) -> dict[str, Any]:
        first, whole, pages, seen = [], [], 0, 0
        for _ in range(self.sizes.list_repeats):
            pages, seen, token = 0, 0, None
            start = time.perf_counter()
            while True:
                page = self.client.search_runs(
                    [self.runs_exp], max_results=self.sizes.page, page_token=token
                )
                pages += 1
                seen += len(page)
                if pages == 1:
                    first.append(time.perf_counter() - start)
                token = page.token
                if not token:
                    break
            whole.append(time.perf_counter() - start)
        return listing_result(first, whole, pages, seen, API["list"])

    # -- metric points -------------------------------------------------------

    def points_committed(self) -> dict[str, Any]:
        n, client = self.sizes.points, self.client
        run_id = self._train_run("points-committed")

        def log(i: int) -> None:
            key, value, step = metric_point(i)
            client.log_metric(run_id, key, value, step=step)

        total, calls = timed_calls(log, n)
        return {**rate(n, [total]), "call": latency(calls), "api": API["points_committed"]}

    def points_background(self) -> dict[str, Any]:
        # About a minute per repetition at full size: the rounds repeat it.
        repeats = self.sizes.slow_repeats
        return self._points_async("points-background", API["points_background"], repeats)

    def points_background_buffered(self) -> dict[str, Any]:
        """The same, tuned: MLflow's queue merges pending points into batches.

        By default its async queue writes each point as its own log_batch
        from a thread pool; with MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS (an
        integer, so 1 s at least) it waits and merges up to 1,000 per batch.
        The flush at the end wakes it at once.
        """
        os.environ[_BUFFERING] = "1"
        try:
            api = API["points_background_buffered"]
            return self._points_async("points-buffered", api, self.sizes.point_repeats)
        finally:
            del os.environ[_BUFFERING]

    def _points_async(self, name: str, api: str, repeats: int) -> dict[str, Any]:
        n, client = self.sizes.points, self.client
        store = client._tracking_client.store  # flush lives on the store, not the client
        seconds, calls = [], []
        for r in range(repeats):
            run_id = self._train_run(f"{name}-{r}")

            def log(i: int, run_id: str = run_id) -> None:
                key, value, step = metric_point(i)
                client.log_metric(run_id, key, value, step=step, synchronous=False)

            with stopwatch() as elapsed:
                _, rep_calls = timed_calls(log, n)
                store.flush_async_logging()  # timed: the points are committed only now
            seconds.append(elapsed[0])
            calls.extend(rep_calls)
        return {**rate(n, seconds), "call": latency(calls), "api": api}

    def points_batch(self) -> dict[str, Any]:
        s, client = self.sizes, self.client
        seconds, calls = [], []
        for r in range(s.point_repeats):
            run_id = self._train_run(f"points-batch-{r}")
            ts = self._now_ms()
            # Built before the clock starts: a trainer has its numbers already.
            batches = [
                [_metric(i, ts) for i in range(b, min(b + s.batch, s.points))]
                for b in range(0, s.points, s.batch)
            ]

            def log(b: int, run_id: str = run_id, batches: list[list[Metric]] = batches) -> None:
                client.log_batch(run_id, metrics=batches[b])

            total, rep_calls = timed_calls(log, len(batches))
            seconds.append(total)
            calls.extend(rep_calls)
        return {**rate(s.points, seconds), "call": latency(calls), "api": API["points_batch"]}

    # -- artifacts -----------------------------------------------------------

    def artifacts(self) -> dict[str, Any]:
        s, client = self.sizes, self.client
        run_id = self._train_run("artifacts")
        down = self.workdir / "mlflow-down"
        big_size = s.big_mib * MIB
        write, read = [], []
        for r in range(s.big_repeats):
            (big,) = write_files(self.workdir / f"mlflow-big-{r}", 1, big_size, "big")
            with stopwatch() as elapsed:
                client.log_artifact(run_id, str(big), artifact_path=f"big/{r}")
            write.append(elapsed[0])
            with stopwatch() as elapsed:
                client.download_artifacts(run_id, f"big/{r}/{big.name}", str(down / f"big-{r}"))
            read.append(elapsed[0])
            check_size(down / f"big-{r}" / big.name, big_size)
        small = write_files(self.workdir / "mlflow-small", s.small_files, s.small_kib * KIB, "s")

        def put(i: int) -> None:
            client.log_artifact(run_id, str(small[i]), artifact_path="small")

        def get(i: int) -> None:
            client.download_artifacts(run_id, f"small/{small[i].name}", str(down / "small"))

        small_write, small_write_calls = timed_calls(put, len(small))
        small_read, small_read_calls = timed_calls(get, len(small))
        mib = big_size / MIB
        return {
            "big_write": rate(mib, write),
            "big_read": rate(mib, read),
            "small_write": {**rate(len(small), [small_write]), "call": latency(small_write_calls)},
            "small_read": {**rate(len(small), [small_read]), "call": latency(small_read_calls)},
            **self._artifact_folder(run_id, small[0].parent, down),
            "api": API["artifacts"],
        }

    def _artifact_folder(self, run_id: str, folder: Path, down: Path) -> dict[str, Any]:
        """MLflow's other way: one call for a whole folder of small files."""
        count = len(list(folder.iterdir()))
        with stopwatch() as write:
            self.client.log_artifacts(run_id, str(folder), artifact_path="folder")
        with stopwatch() as read:
            self.client.download_artifacts(run_id, "folder", str(down / "folder"))
        return {
            "small_dir_write": rate(count, [write[0]]),
            "small_dir_read": rate(count, [read[0]]),
            "api_dir": API["artifacts_dir"],
        }


def _metric(i: int, timestamp_ms: int) -> Metric:
    key, value, step = metric_point(i)
    return Metric(key, value, timestamp_ms, step)


# The order matters: listing reads the runs the first workload wrote.
WORKLOADS = (
    "runs",
    "list",
    "points_committed",
    "points_background",
    "points_background_buffered",
    "points_batch",
    "artifacts",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--sizes", default="{}", help="JSON of workload.Sizes fields")
    args = parser.parse_args(argv)
    bench = Bench(args.tracking_uri, args.workdir, Sizes.from_json(args.sizes))
    methods = {
        "runs": bench.runs,
        "list": bench.list_runs,
        "points_committed": bench.points_committed,
        "points_background": bench.points_background,
        "points_background_buffered": bench.points_background_buffered,
        "points_batch": bench.points_batch,
        "artifacts": bench.artifacts,
    }
    results = {}
    for name in WORKLOADS:
        print(f"mlflow: {name}", file=sys.stderr, flush=True)
        results[name] = methods[name]()
    shutil.rmtree(args.workdir / "mlflow-down", ignore_errors=True)
    emit_result({"tool": "mlflow", "version": mlflow.__version__, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
