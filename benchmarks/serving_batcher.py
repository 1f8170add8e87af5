"""Micro-benchmark of the dynamic batcher: one model, batched vs called directly.

    .venv/bin/python benchmarks/serving_batcher.py           # writes results/serving_batcher.json
    .venv/bin/python benchmarks/serving_batcher.py --quick   # a smoke run

A scikit-learn RandomForest (100 trees) trained on generated data answers
one-row requests from N closed-loop clients on one asyncio event loop
(each client sends its next request when the previous one is answered):

- ``direct``: every request calls the model in a thread pool
  (``loop.run_in_executor``, the default pool size), as a server that only
  keeps the model off the event loop would;
- ``batched``: every request goes through :class:`conveyor.serving.batcher.Batcher`
  (``max_batch_size=64``, ``max_wait_ms=2``).

At concurrency 1 the batcher must cost nothing (a lone request never
waits); at concurrency 64 it should turn 64 model calls into a few. For each
mode and concurrency: rows/s, and p50/p99 latency per request (ms), plus
the batch sizes the batcher formed; medians over rounds. At concurrency 1
the two modes alternate request by request in one loop, at 64 the order of
the modes alternates between rounds (the machine may be shared). No peer
is involved (the full serving benchmark, over HTTP against other servers,
is separate). Nothing here is asserted: the numbers are for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import numpy as np
import pyarrow as pa
from sklearn.ensemble import RandomForestClassifier

from conveyor.serving.batcher import Batcher

FEATURES = 20
CONCURRENCY = (1, 64)


def _model() -> Any:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5_000, FEATURES))
    y = (x[:, :5].sum(axis=1) + rng.normal(scale=0.5, size=len(x)) > 0).astype(int)
    return RandomForestClassifier(n_estimators=100, max_depth=12, random_state=0).fit(x, y)


def _requests(count: int) -> list[pa.Table]:
    x = np.random.default_rng(1).normal(size=(count, FEATURES))
    return [pa.table({f"f{j}": x[i : i + 1, j] for j in range(FEATURES)}) for i in range(count)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _drive(
    call: Any, requests: list[pa.Table], concurrency: int
) -> tuple[float, list[float]]:
    """N closed-loop clients share ``requests``; returns wall seconds and latencies."""
    latencies: list[float] = []
    it = iter(requests)

    async def client() -> None:
        for table in it:
            start = time.perf_counter()
            await call(table)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


def _measure(model: Any, mode: str, concurrency: int, count: int) -> dict[str, Any]:
    def predict(table: pa.Table) -> Any:
        matrix = np.column_stack([column.to_numpy() for column in table.columns])
        return model.predict_proba(matrix)

    requests = _requests(count)
    warmup = _requests(min(50, count))
    sizes: list[int] = []

    async def main() -> tuple[float, list[float], Batcher | None]:
        if mode == "direct":
            loop = asyncio.get_running_loop()
            pool = ThreadPoolExecutor()

            async def call(table: pa.Table) -> Any:
                return await loop.run_in_executor(pool, predict, table)

            await _drive(call, warmup, concurrency)
            wall, latencies = await _drive(call, requests, concurrency)
            pool.shutdown()
            return wall, latencies, None
        batcher = Batcher(predict, max_batch_size=64, max_wait_ms=2.0, name="bench")
        await _drive(batcher.submit, warmup, concurrency)
        batcher.on_batch = lambda size, _seconds: sizes.append(size)
        history_before = len(batcher.history)
        wall, latencies = await _drive(batcher.submit, requests, concurrency)
        await batcher.close()
        assert len(batcher.history) >= history_before
        return wall, latencies, batcher

    wall, latencies, batcher = asyncio.run(main())
    return _summary(mode, concurrency, wall, latencies, batcher, sizes)


def _measure_sequential(model: Any, count: int) -> list[dict[str, Any]]:
    """Concurrency 1, both modes in one loop, alternating request by request.

    With one caller the two modes cannot interfere, and alternating puts
    them under the same machine load (a shared machine drifts by 2x over
    seconds, more than the difference being measured).
    """

    def predict(table: pa.Table) -> Any:
        matrix = np.column_stack([column.to_numpy() for column in table.columns])
        return model.predict_proba(matrix)

    requests = _requests(count)
    sizes: list[int] = []

    async def main() -> tuple[list[float], list[float], Batcher]:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor()
        batcher = Batcher(predict, max_batch_size=64, max_wait_ms=2.0, name="bench")
        for table in requests[:50]:  # warm-up
            await loop.run_in_executor(pool, predict, table)
            await batcher.submit(table)
        batcher.on_batch = lambda size, _seconds: sizes.append(size)
        direct: list[float] = []
        batched: list[float] = []
        for table in requests:
            start = time.perf_counter()
            await loop.run_in_executor(pool, predict, table)
            direct.append(time.perf_counter() - start)
            start = time.perf_counter()
            await batcher.submit(table)
            batched.append(time.perf_counter() - start)
        await batcher.close()
        pool.shutdown()
        return direct, batched, batcher

    direct, batched, batcher = asyncio.run(main())
    return [
        _summary("direct", 1, sum(direct), direct, None, []),
        _summary("batched", 1, sum(batched), batched, batcher, sizes),
    ]


def _summary(
    mode: str,
    concurrency: int,
    wall: float,
    latencies: list[float],
    batcher: Batcher | None,
    sizes: list[int],
) -> dict[str, Any]:
    count = len(latencies)
    result: dict[str, Any] = {
        "mode": mode,
        "concurrency": concurrency,
        "requests": count,
        "rows_per_s": round(count / wall, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
    }
    if batcher is not None:
        recent = list(batcher.history)[-len(sizes) :] if sizes else []
        result |= {
            "batches": len(sizes),
            "mean_batch_rows": round(statistics.fmean(sizes), 2) if sizes else None,
            "max_batch_rows": max(sizes) if sizes else None,
            "batches_that_waited": sum(b.waited for b in recent),
            "fixed_cost_ms": round((batcher.fixed_cost or 0.0) * 1000, 3),
            "per_row_cost_ms": round((batcher.per_row_cost or 0.0) * 1000, 4),
        }
    return result


def _median_run(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number over rounds (the rounds alternate modes, against noise)."""
    merged: dict[str, Any] = {}
    for key, value in rounds[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "concurrency":
            merged[key] = round(statistics.median(r[key] for r in rounds), 3)
        else:
            merged[key] = value
    merged["rounds"] = len(rounds)
    return merged


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few requests, for a smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (1 with --quick)")
    args = parser.parse_args(argv)
    counts = {1: 100, 64: 640} if args.quick else {1: 300, 64: 2_000}
    rounds = args.rounds or (1 if args.quick else 3)
    model = _model()
    raw: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for round_ in range(rounds):
        for run in _measure_sequential(model, counts[1]):
            raw.setdefault((1, run["mode"]), []).append(run)
        modes = ("direct", "batched") if round_ % 2 == 0 else ("batched", "direct")
        for mode in modes:
            run = _measure(model, mode, 64, counts[64])
            raw.setdefault((64, mode), []).append(run)
    runs = []
    for concurrency in CONCURRENCY:
        for mode in ("direct", "batched"):
            run = _median_run(raw[(concurrency, mode)])
            print(
                f"c={concurrency:<3} {mode:<8} {run['rows_per_s']:>9,.0f} rows/s  "
                f"p50 {run['p50_ms']:>8.2f} ms  p99 {run['p99_ms']:>8.2f} ms"
                + (
                    f"  batches of {run['mean_batch_rows']} rows (max {run['max_batch_rows']})"
                    if mode == "batched"
                    else ""
                )
            )
            runs.append(run)
    import sklearn

    data = {
        "benchmark": "serving_batcher",
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "versions": {"scikit-learn": sklearn.__version__, "pyarrow": pa.__version__},
        "workload": {
            "model": "RandomForestClassifier(n_estimators=100, max_depth=12), 20 features",
            "request": "one row (an Arrow table), closed-loop clients on one event loop",
            "batcher": {"max_batch_size": 64, "max_wait_ms": 2.0},
            "direct": "loop.run_in_executor(ThreadPoolExecutor())",
            "quick": args.quick,
            "rounds": rounds,
            "note": "medians over rounds; c=1 alternates modes per request, c=64 per round",
        },
        "runs": runs,
    }
    if not args.quick:
        path = harness.write_result("serving_batcher", data)
        print(f"wrote {path.relative_to(harness.ROOT)}")
    return data


if __name__ == "__main__":
    main()
