"""Conveyor's side of the tracking benchmark; runs in Conveyor's .venv, prints JSON.

    python conveyor_tracking.py --store-url sqlite:////tmp/x/conveyor.db \
        --events-url sqlite:////tmp/x/events.db --workdir /tmp/x --sizes '{...}'

Written like a peer's side (``mlflow_tracking.py``), with the same workload
module and stopwatch, and run the same way (a fresh process), so neither tool
inherits the other's warm caches or the orchestrator's state. Every timed
region starts after the store, log or artifact folder is open (opening
migrates a fresh database).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

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

import conveyor
from conveyor.artifacts.store import ArtifactStore
from conveyor.backends import ARTIFACTS, EVENTS, STORE
from conveyor.events import Event
from conveyor.events.log import EventLog
from conveyor.store.database import MetadataStore

API = {
    "runs": "runs.start(params=...) + log_metrics + finish (3 calls)",
    "runs_4_calls": "runs.start + log_params + log_metrics + finish (4 calls)",
    "list": "runs.list(limit=page, cursor=...)",
    "points_committed": "events.emit('train.metric', payload=..., durable=True) per point",
    "points_background": "events.emit('train.metric', payload=...) per point, then close()",
    "points_batch": "events.append_many([1,000 Event], durable=True)",
    "artifacts": "ArtifactStore.put(path) / download(digest, path), file:// root",
    "artifacts_get": "ArtifactStore.get(digest) -> bytes (sha256 verified)",
    "artifacts_recorded": "ArtifactStore.put(path) + runs.add_artifact(run_id, name, digest, size)",
}
KIND = "train.metric"


class Bench:
    """One metadata store, event log URL and artifact folder for the workloads."""

    def __init__(self, store_url: str, events_url: str, workdir: Path, sizes: Sizes) -> None:
        self.workdir = workdir
        self.sizes = sizes
        self.events_url = events_url
        # Opening migrates a fresh database: outside every timed region.
        self.store: MetadataStore = STORE.open(store_url)
        EVENTS.open(events_url).close()
        self.artifact_store: ArtifactStore = ARTIFACTS.open(
            (workdir / "conveyor-artifacts").as_uri()
        )

    def close(self) -> None:
        self.artifact_store.close()
        self.store.close()

    def _train_run(self, name: str) -> str:
        return self.store.runs.start("train", name).id

    # -- runs and listing ----------------------------------------------------

    def runs(self) -> dict[str, Any]:
        s, runs = self.sizes, self.store.runs

        def one_run(i: int) -> None:
            run = runs.start("bench", f"run-{i}", params=run_params(i, s.params))
            runs.log_metrics(run.id, run_metrics(i, s.metrics))
            runs.finish(run.id, "succeeded")

        total, per_run = timed_calls(one_run, s.runs)
        return {**rate(s.runs, [total]), "per_run": latency(per_run), "api": API["runs"]}

    def runs_4_calls(self) -> dict[str, Any]:
        """The same runs with params logged in their own call, as MLflow's per-kind API would."""
        s, runs = self.sizes, self.store.runs

        def one_run(i: int) -> None:
            run = runs.start("bench4", f"run-{i}")
            runs.log_params(run.id, run_params(i, s.params))
            runs.log_metrics(run.id, run_metrics(i, s.metrics))
            runs.finish(run.id, "succeeded")

        total, per_run = timed_calls(one_run, s.runs)
        return {**rate(s.runs, [total]), "per_run": latency(per_run), "api": API["runs_4_calls"]}

    def list_runs(self) -> dict[str, Any]:
        first, whole, pages, seen = [], [], 0, 0
        for _ in range(self.sizes.list_repeats):
            pages, seen, cursor = 0, 0, None
            start = time.perf_counter()
            while True:
                page = self.store.runs.list(limit=self.sizes.page, cursor=cursor)
                pages += 1
                seen += len(page)
                if pages == 1:
                    first.append(time.perf_counter() - start)
                cursor = page.next_cursor
                if cursor is None:
                    break
            whole.append(time.perf_counter() - start)
        return listing_result(first, whole, pages, seen, API["list"])

    # -- metric points -------------------------------------------------------

    def points_committed(self) -> dict[str, Any]:
        n = self.sizes.durable_points
        run_id = self._train_run("points-committed")
        with EventLog.from_url(self.events_url) as log:

            def emit(i: int) -> None:
                key, value, step = metric_point(i)
                log.emit(KIND, subject=run_id, payload=_payload(key, value, step), durable=True)

            total, calls = timed_calls(emit, n)
        return {**rate(n, [total]), "call": latency(calls), "api": API["points_committed"]}

    def points_background(self) -> dict[str, Any]:
        n = self.sizes.points
        seconds, calls = [], []
        for r in range(self.sizes.point_repeats):
            run_id = self._train_run(f"points-background-{r}")
            log = EventLog.from_url(self.events_url)

            def emit(i: int, run_id: str = run_id, log: EventLog = log) -> None:
                key, value, step = metric_point(i)
                log.emit(KIND, subject=run_id, payload=_payload(key, value, step))

            with stopwatch() as elapsed:
                _, rep_calls = timed_calls(emit, n)
                log.close()  # timed: the points are committed only now
            seconds.append(elapsed[0])
            calls.extend(rep_calls)
        return {**rate(n, seconds), "call": latency(calls), "api": API["points_background"]}

    def points_batch(self) -> dict[str, Any]:
        s = self.sizes
        seconds, calls = [], []
        for r in range(s.point_repeats):
            run_id = self._train_run(f"points-batch-{r}")
            # Built before the clock starts, like MLflow's Metric lists: a trainer has its numbers.
            batches = [
                [_event(run_id, i) for i in range(b, min(b + s.batch, s.points))]
                for b in range(0, s.points, s.batch)
            ]
            with EventLog.from_url(self.events_url) as log:

                def append(
                    b: int, log: EventLog = log, batches: list[list[Event]] = batches
                ) -> None:
                    log.append_many(batches[b], durable=True)

                total, rep_calls = timed_calls(append, len(batches))
            seconds.append(total)
            calls.extend(rep_calls)
        return {**rate(s.points, seconds), "call": latency(calls), "api": API["points_batch"]}

    # -- artifacts -----------------------------------------------------------

    def artifacts(self) -> dict[str, Any]:
        s, store = self.sizes, self.artifact_store
        down = self.workdir / "conveyor-down"
        big_size = s.big_mib * MIB
        write, read, get = [], [], []
        for r in range(s.big_repeats):
            (big,) = write_files(self.workdir / f"conveyor-big-{r}", 1, big_size, "big")
            with stopwatch() as elapsed:
                ref = store.put(big)
            write.append(elapsed[0])
            with stopwatch() as elapsed:
                store.download(ref.digest, down / f"big-{r}" / big.name)
            read.append(elapsed[0])
            with stopwatch() as elapsed:
                data = store.get(ref.digest)
            get.append(elapsed[0])
            check_size(down / f"big-{r}" / big.name, big_size)
            if len(data) != big_size:
                raise RuntimeError(f"get returned {len(data)} bytes, expected {big_size}")
        mib = big_size / MIB
        return {
            "big_write": rate(mib, write),
            "big_read": rate(mib, read),
            "big_get": rate(mib, get),
            **self._small_files(down),
            "api": API["artifacts"],
            "api_get": API["artifacts_get"],
            "api_recorded": API["artifacts_recorded"],
        }

    def _small_files(self, down: Path) -> dict[str, Any]:
        s, store = self.sizes, self.artifact_store
        small = write_files(self.workdir / "conveyor-small", s.small_files, s.small_kib * KIB, "s")
        digests: list[str] = [""] * len(small)

        def put(i: int) -> None:
            digests[i] = store.put(small[i]).digest

        def download(i: int) -> None:
            store.download(digests[i], down / "small" / small[i].name)

        def get(i: int) -> None:
            store.get(digests[i])

        put_s, put_calls = timed_calls(put, len(small))
        down_s, down_calls = timed_calls(download, len(small))
        get_s, get_calls = timed_calls(get, len(small))
        n = len(small)
        return {
            "small_write": {**rate(n, [put_s]), "call": latency(put_calls)},
            "small_read": {**rate(n, [down_s]), "call": latency(down_calls)},
            "small_get": {**rate(n, [get_s]), "call": latency(get_calls)},
            "small_write_recorded": self._small_recorded(),
        }

    def _small_recorded(self) -> dict[str, Any]:
        """put + add_artifact: what attaching a file to a run costs (MLflow's log_artifact does)."""
        s, store, runs = self.sizes, self.artifact_store, self.store.runs
        # Fresh bytes: the store deduplicates, and re-putting stored bytes skips the copy.
        files = write_files(
            self.workdir / "conveyor-small-2", s.small_files, s.small_kib * KIB, "r"
        )
        run_id = self._train_run("artifacts")

        def put(i: int) -> None:
            ref = store.put(files[i])
            runs.add_artifact(run_id, files[i].name, ref.digest, ref.size)

        total, calls = timed_calls(put, len(files))
        return {**rate(len(files), [total]), "call": latency(calls)}


def _payload(key: str, value: float, step: int) -> dict[str, Any]:
    return {"key": key, "value": value, "step": step}


def _event(run_id: str, i: int) -> Event:
    key, value, step = metric_point(i)
    return Event(KIND, subject=run_id, payload=_payload(key, value, step))


# The order matters: listing reads the runs the first workload wrote, before
# any other run exists (runs.list has no experiment filter to hide the rest).
WORKLOADS = (
    "runs",
    "list",
    "runs_4_calls",
    "points_committed",
    "points_background",
    "points_batch",
    "artifacts",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-url", required=True)
    parser.add_argument("--events-url", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--sizes", default="{}", help="JSON of workload.Sizes fields")
    args = parser.parse_args(argv)
    bench = Bench(args.store_url, args.events_url, args.workdir, Sizes.from_json(args.sizes))
    methods = {
        "runs": bench.runs,
        "list": bench.list_runs,
        "runs_4_calls": bench.runs_4_calls,
        "points_committed": bench.points_committed,
        "points_background": bench.points_background,
        "points_batch": bench.points_batch,
        "artifacts": bench.artifacts,
    }
    results = {}
    try:
        for name in WORKLOADS:
            print(f"conveyor: {name}", file=sys.stderr, flush=True)
            results[name] = methods[name]()
    finally:
        bench.close()
    shutil.rmtree(args.workdir / "conveyor-down", ignore_errors=True)
    emit_result({"tool": "conveyor", "version": conveyor.__version__, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
