"""Online feature store: one entity's 30 features across 10 views, read from Redis in-process.

    .venv/bin/python benchmarks/features_online.py            # 2,000 and 20,000 entities
    .venv/bin/python benchmarks/features_online.py --quick    # smaller, fewer reads

For each size, every entity gets a row in each of 10 views of 3 features (a float, an int,
a str), written through ``OnlineStore.write`` (its rows/s are reported too). Then single
reads of one random entity's 30 features (``OnlineStore.read``, 10 keys in one MGET,
decoded, statuses and event times) are timed one by one, interleaved with the raw reads
below on the same entities: median, p90, p99, p99.9. The same
keys read raw with redis-py are the floor: one ``MGET``, and a pipeline of 10 ``GET`` (what
a store keeping one key per view sends). The larger size stores 10x the keys: a read
should not notice. The in-process memory backend is measured alongside. Redis is the one
on 127.0.0.1:6379 (``CONVEYOR_BENCH_REDIS``), under a fresh key prefix removed afterwards.
Nothing is asserted; results go to ``results/features_online.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from rich.table import Table

PEERS: tuple[str, ...] = ()
Log = Callable[[str], None]
REDIS_URL = os.environ.get("CONVEYOR_BENCH_REDIS", "redis://127.0.0.1:6379/15")
VIEWS = [f"view_{i}" for i in range(10)]
FEATURES = ("amount", "count", "segment")
TTL = timedelta(days=7)


def _refs() -> list[Any]:
    from conveyor.features.online import FeatureRef

    return [
        FeatureRef(view, f"{view}_{f}", ("customer_id",), TTL) for view in VIEWS for f in FEATURES
    ]


def _fill(store: Any, entities: range, log: Log) -> float:
    """Write every view's rows for ``entities``; returns rows/s."""
    now = datetime.now(UTC)
    rng = random.Random(0)
    rows_done = 0
    started = time.perf_counter()
    chunk = 5000
    for view in VIEWS:
        for start in range(entities.start, entities.stop, chunk):
            rows = [
                {
                    "customer_id": i,
                    "ts": now - timedelta(seconds=rng.randrange(86_400)),
                    f"{view}_amount": rng.random() * 100,
                    f"{view}_count": rng.randrange(1000),
                    f"{view}_segment": rng.choice(("gold", "silver", "bronze")),
                }
                for i in range(start, min(start + chunk, entities.stop))
            ]
            store.write(
                view,
                rows,
                join_keys=["customer_id"],
                event_time="ts",
                features=[f"{view}_{f}" for f in FEATURES],
                ttl=TTL,
                types={f"{view}_amount": "double", f"{view}_count": "int64"},
            )
            rows_done += len(rows)
        log(f"features_online: wrote {view} for {len(entities)} entities")
    return rows_done / (time.perf_counter() - started)


def _time(
    calls: dict[str, Callable[[int], Any]], n: int, entities: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Time every call on the same random entities, interleaved (rotating which goes first),
    so that a machine busy with something else slows all of them alike."""
    rng = random.Random(1)
    picks = [rng.randrange(entities) for _ in range(n + warmup)]
    names = list(calls)
    took: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for k, i in enumerate(picks):
        order = names[k % len(names) :] + names[: k % len(names)]
        for name in order:
            t0 = clock()
            calls[name](i)
            if k >= warmup:
                took[name].append((clock() - t0) / 1000)
    return {name: _stats(sorted(values)) for name, values in took.items()}


def _stats(took: list[float]) -> dict[str, float]:
    def pct(p: float) -> float:
        return took[min(len(took) - 1, int(p * len(took)))]

    return {
        "reads": len(took),
        "median_us": statistics.median(took),
        "mean_us": statistics.fmean(took),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": took[-1],
    }


def _measure(kv: Any, raw: Any, entities: int, reads: int, log: Log) -> dict[str, Any]:
    import orjson

    from conveyor.features.online import OnlineStore, entity_key

    store = OnlineStore(kv)
    refs = _refs()

    def conveyor_read(i: int) -> Any:
        result = store.read([{"customer_id": i}], refs)
        assert result.statuses[0][0] == "present"
        return result

    calls: dict[str, Callable[[int], Any]] = {"conveyor_read": conveyor_read}
    if raw is not None:
        keys_of = [
            [kv.prefix + entity_key(v, ["customer_id"], {"customer_id": i}) for v in VIEWS]
            for i in range(entities)
        ]

        def raw_mget(i: int) -> Any:
            return raw.mget(keys_of[i])

        def raw_mget_decode(i: int) -> Any:
            return [orjson.loads(v) for v in raw.mget(keys_of[i])]

        def raw_pipeline(i: int) -> Any:
            pipe = raw.pipeline(transaction=False)
            for key in keys_of[i]:
                pipe.get(key)
            return pipe.execute()

        calls |= {
            "redis_py_mget": raw_mget,
            "redis_py_mget_orjson": raw_mget_decode,
            "redis_py_pipeline_10_get": raw_pipeline,
        }
    out = _time(calls, reads, entities, warmup=500)
    for name, m in out.items():
        log(
            f"features_online: {entities} entities, {name}: median {m['median_us']:.0f} µs, "
            f"p99 {m['p99_us']:.0f} µs"
        )
    return out


def run(
    *,
    quick: bool = False,
    pythons: dict[str, Path] | None = None,
    log: Log = print,
    reads: int | None = None,
) -> dict[str, Any]:
    import redis

    from conveyor.backends import CACHE, BackendURL
    from conveyor.features.online import OnlineStore

    reads = reads or (2_000 if quick else 20_000)
    sizes = (200, 2_000) if quick else (2_000, 20_000)
    prefix = f"bench-online-{uuid.uuid4().hex[:8]}:"
    base = BackendURL.parse(REDIS_URL)
    url = base.with_(query={**base.query, "prefix": prefix}).render(hide_password=False)
    raw = redis.Redis.from_url(base.with_(query={}).render(hide_password=False))
    results: dict[str, Any] = {"redis": {}, "memory": {}}
    write_rows_per_s: dict[str, float] = {}
    try:
        with CACHE.open(url) as kv, CACHE.open("memory://") as mem:
            done = 0
            for size in sizes:
                # Grow the stored set: the first size's entities stay, the rest are added.
                write_rows_per_s[f"redis_{size}"] = _fill(OnlineStore(kv), range(done, size), log)
                _fill(OnlineStore(mem), range(done, size), log)
                done = size
                stored = raw.dbsize()
                results["redis"][str(size)] = {
                    "entities": size,
                    "online_keys": size * len(VIEWS),
                    "redis_db_keys": stored,
                    **_measure(kv, raw, size, reads, log),
                }
                results["memory"][str(size)] = {
                    "entities": size,
                    **_measure(mem, None, size, reads, log),
                }
            redis_info = raw.info("server")
            kv.clear()
    finally:
        raw.close()
    result = {
        "machine": harness.machine(),
        "timestamp": harness.timestamp(),
        "redis_version": redis_info.get("redis_version"),
        "read": "1 entity, 10 views x 3 features = 30 values, one call, in-process",
        "reads_per_measure": reads,
        "target_p99_us": 300,
        "write_rows_per_s": write_rows_per_s,
        "results": results,
    }
    name = "features_online-quick" if quick else "features_online"
    result["path"] = str(harness.write_result(name, result))
    return result


def summary(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"Online read of 30 features over 10 views ({result['reads_per_measure']} reads, µs)"
    )
    for column in ("backend", "entities", "what", "median", "p90", "p99", "p99.9"):
        table.add_column(column, justify="left" if column in ("backend", "what") else "right")
    for backend, sizes in result["results"].items():
        for size, measures in sizes.items():
            for what, m in measures.items():
                if not isinstance(m, dict):
                    continue
                table.add_row(
                    backend,
                    size,
                    what,
                    f"{m['median_us']:.0f}",
                    f"{m['p90_us']:.0f}",
                    f"{m['p99_us']:.0f}",
                    f"{m['p999_us']:.0f}",
                )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reads", type=int)
    args = parser.parse_args()
    from rich.console import Console

    result = run(quick=args.quick, reads=args.reads)
    Console().print(summary(result))
    print(f"written to {result['path']}")


if __name__ == "__main__":
    main()
