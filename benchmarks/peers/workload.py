"""The tracking workload and its stopwatch, shared by Conveyor's side and every peer's.

Standard library only: peer scripts import it from their own virtualenv, so
both tools get exactly the same sizes, data and timing code.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

MIB = 1 << 20
KIB = 1 << 10
# The marker a peer prints before its JSON, so stray output (a library's
# banner or warning on stdout) cannot be mistaken for the result.
RESULT_MARKER = "BENCH-RESULT "


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much of each workload to run; ``quick()`` is the smoke-test size."""

    runs: int = 500
    params: int = 10
    metrics: int = 10
    page: int = 100
    list_repeats: int = 5
    points: int = 10_000
    batch: int = 1_000
    durable_points: int = 1_000
    point_repeats: int = 3
    slow_repeats: int = 1
    """Repeats of what takes a minute a time (MLflow's unbuffered async queue)."""
    big_mib: int = 20
    big_repeats: int = 3
    small_files: int = 200
    small_kib: int = 10

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            runs=50,
            page=10,
            list_repeats=2,
            points=500,
            batch=100,
            durable_points=100,
            point_repeats=1,
            big_mib=2,
            big_repeats=1,
            small_files=20,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Sizes:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- the data -----------------------------------------------------------------


def run_params(i: int, n: int) -> dict[str, str]:
    """``n`` hyper-parameters of run ``i``; strings, as MLflow stores them."""
    return {f"param_{k}": f"value-{i}-{k}" for k in range(n)}


def run_metrics(i: int, n: int) -> dict[str, float]:
    """``n`` final metrics of run ``i``."""
    return {f"metric_{k}": 1.0 / (i + k + 1) for k in range(n)}


def metric_point(i: int) -> tuple[str, float, int]:
    """Point ``i`` of a training run: ten series (``loss_0``..``loss_9``) stepping together."""
    return f"loss_{i % 10}", math.exp(-i / 5_000) + (i % 7) * 1e-3, i // 10


def write_files(folder: Path, count: int, size: int, prefix: str) -> list[Path]:
    """``count`` files of ``size`` random bytes, so no store can deduplicate them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"{prefix}-{k:04d}.bin"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


# -- the stopwatch ------------------------------------------------------------


def timed_calls(call: Callable[[int], object], count: int) -> tuple[float, list[float]]:
    """Run ``call(0..count-1)``; the wall time of the loop and each call's seconds."""
    latencies = [0.0] * count
    clock = time.perf_counter
    start = clock()
    for i in range(count):
        t0 = clock()
        call(i)
        latencies[i] = clock() - t0
    return clock() - start, latencies


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as elapsed:`` then ``elapsed[0]`` holds the seconds."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency(latencies: list[float]) -> dict[str, float]:
    """Median and p99 of per-call seconds, in milliseconds."""
    return {
        "median_ms": statistics.median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "calls": len(latencies),
    }


def rate(count: float, seconds: list[float]) -> dict[str, Any]:
    """``count`` items per repetition: the median rate and every repetition's seconds."""
    med = statistics.median(seconds)
    return {"per_s": count / med, "seconds": seconds, "median_seconds": med}


def emit_result(result: dict[str, Any]) -> None:
    print(RESULT_MARKER + json.dumps(result), flush=True)


def parse_result(stdout: str) -> dict[str, Any]:
    """The JSON a peer printed with :func:`emit_result` (the last one wins)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            parsed: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            return parsed
    raise ValueError("the peer printed no result line")


def check_size(path: Path, size: int) -> None:
    # A benchmark that reads nothing back would be fast and wrong.
    if path.stat().st_size != size:
        raise RuntimeError(f"{path} has {path.stat().st_size} bytes, expected {size}")


def listing_result(
    first: list[float], whole: list[float], pages: int, seen: int, api: str
) -> dict[str, Any]:
    return {
        "first_page_ms": statistics.median(first) * 1e3,
        "all_pages_ms": statistics.median(whole) * 1e3,
        "first_page_samples_ms": [x * 1e3 for x in first],
        "all_pages_samples_ms": [x * 1e3 for x in whole],
        "pages": pages,
        "runs_seen": seen,
        "api": api,
    }
