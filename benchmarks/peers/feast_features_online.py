"""Feast's side of ``benchmarks/features_online.py``; runs in Feast's venv (``.bench-venvs/feast``).

    python feast_features_online.py setup REPO --data DIR --project NAME --db N [--views 10]
    python feast_features_online.py read REPO --stage DIR [--stage DIR ...] --reads N
    python feast_features_online.py count REPO
    python feast_features_online.py clean REPO

``setup`` writes ``REPO/feature_store.yaml`` (Redis online store on 127.0.0.1:6379 database
``N``, the duckdb offline store, a local registry) and applies the same definitions as
Conveyor's side: entity ``customer`` (``customer_id``, int64), views ``view_0`` ..
``view_9`` of three features each (``<view>_amount`` float64, ``<view>_count`` int64,
``<view>_segment`` string; TTL 7 days; source ``DIR/<view>.parquet``) and the feature
service ``bench`` of all 30.

``read`` loads each stage's Parquet files (``DIR/<view>.parquet``, the same files Conveyor
loads) with ``write_to_online_store``, then times ``get_online_features`` of the service
for one random entity, ``.to_dict()``, in-process, one call after another; and the same
entity's hash read raw with redis-py (Feast keeps one hash per entity: one ``HGETALL``).
It prints one JSON document. ``feast materialize`` itself is run by the parent as a whole
process (``feast -c REPO materialize START END``). ``count`` prints the entity hashes
Feast wrote; ``clean`` deletes every key of the project (Feast suffixes each key with the
project name) and nothing else.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from workload import emit_result

FEATURES = ("amount", "count", "segment")
TTL = timedelta(days=7)


def _log(message: str) -> None:
    print(f"feast: {message}", file=sys.stderr, flush=True)


def _config(repo: Path) -> dict[str, Any]:
    return json.loads((repo / "bench.json").read_text())


def setup(repo: Path, data: Path, project: str, db: int, views: int) -> None:
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float64, Int64, String
    from feast.value_type import ValueType

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: redis\n"
        f'  connection_string: "127.0.0.1:6379,db={db}"\n'
        "offline_store:\n"
        "  type: duckdb\n"
        "entity_key_serialization_version: 3\n"
    )
    (repo / "bench.json").write_text(json.dumps({"project": project, "db": db, "views": views}))
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    objects: list[Any] = [customer]
    fvs = []
    for i in range(views):
        name = f"view_{i}"
        source = FileSource(
            name=f"{name}_source", path=str(data / f"{name}.parquet"), timestamp_field="ts"
        )
        fv = FeatureView(
            name=name,
            entities=[customer],
            ttl=TTL,
            schema=[
                Field(name=f"{name}_amount", dtype=Float64),
                Field(name=f"{name}_count", dtype=Int64),
                Field(name=f"{name}_segment", dtype=String),
            ],
            source=source,
            online=True,
        )
        fvs.append(fv)
        objects += [source, fv]
    objects.append(FeatureService(name="bench", features=fvs))
    store = FeatureStore(repo_path=str(repo))
    store.apply(objects)
    import feast

    emit_result({"feast": feast.__version__, "project": project, "db": db})


def _stats(took: list[float]) -> dict[str, float]:
    took.sort()

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


def read(repo: Path, stages: list[Path], reads: int, warmup: int) -> None:
    import pyarrow.parquet as pq
    import redis
    from feast import FeatureStore
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    cfg = _config(repo)
    store = FeatureStore(repo_path=str(repo))
    service = store.get_feature_service("bench")
    raw = redis.Redis(host="127.0.0.1", port=6379, db=cfg["db"])
    project = cfg["project"]
    out: dict[str, Any] = {"stages": []}
    entities = 0
    for stage in stages:
        started = time.perf_counter()
        rows = 0
        for i in range(cfg["views"]):
            frame = pq.read_table(stage / f"view_{i}.parquet").to_pandas()
            store.write_to_online_store(f"view_{i}", frame)
            rows += len(frame)
            entities_in_stage = len(frame)
        took = time.perf_counter() - started
        entities += entities_in_stage
        _log(f"wrote {rows} rows ({entities} entities) in {took:.1f} s")

        def feast_read(i: int) -> Any:
            got = store.get_online_features(
                features=service, entity_rows=[{"customer_id": i}]
            ).to_dict()
            assert got["view_0_amount"][0] is not None, got
            return got

        def key_of(i: int) -> bytes:
            ek = EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=i)])
            return _redis_key(project, ek, entity_key_serialization_version=3)

        keys = [key_of(i) for i in range(entities)]

        def raw_hgetall(i: int, keys: list[bytes] = keys) -> Any:
            pipe = raw.pipeline(transaction=False)
            pipe.hgetall(keys[i])
            return pipe.execute()

        calls = {"feast_get_online_features": feast_read, "redis_py_hgetall": raw_hgetall}
        rng = random.Random(1)
        picks = [rng.randrange(entities) for _ in range(reads + warmup)]
        names = list(calls)
        timings: dict[str, list[float]] = {n: [] for n in names}
        clock = time.perf_counter_ns
        for k, i in enumerate(picks):
            order = names[k % len(names) :] + names[: k % len(names)]
            for name in order:
                t0 = clock()
                calls[name](i)
                if k >= warmup:
                    timings[name].append((clock() - t0) / 1000)
        result = {name: _stats(v) for name, v in timings.items()}
        for name, m in result.items():
            _log(
                f"{entities} entities, {name}: median {m['median_us']:.0f} µs, "
                f"p99 {m['p99_us']:.0f} µs"
            )
        out["stages"].append(
            {
                "entities": entities,
                "write_rows": rows,
                "write_seconds": took,
                "write_rows_per_s": rows / took,
                "redis_db_keys": raw.dbsize(),
                **result,
            }
        )
    import feast
    import redis as redis_py

    try:
        import hiredis  # noqa: F401

        has_hiredis = True
    except ImportError:
        has_hiredis = False
    out |= {"feast": feast.__version__, "redis_py": redis_py.__version__, "hiredis": has_hiredis}
    emit_result(out)


def _project_keys(raw: Any, project: str) -> list[bytes]:
    suffix = project.encode()
    return [k for k in raw.scan_iter(count=5000) if k.endswith(suffix)]


def count(repo: Path) -> None:
    import redis

    cfg = _config(repo)
    raw = redis.Redis(host="127.0.0.1", port=6379, db=cfg["db"])
    keys = _project_keys(raw, cfg["project"])
    sample = raw.hlen(keys[0]) if keys else 0
    emit_result({"entity_hashes": len(keys), "fields_in_one_hash": sample})


def clean(repo: Path) -> None:
    import redis

    cfg = _config(repo)
    raw = redis.Redis(host="127.0.0.1", port=6379, db=cfg["db"])
    keys = _project_keys(raw, cfg["project"])
    for start in range(0, len(keys), 1000):
        raw.unlink(*keys[start : start + 1000])
    emit_result({"deleted": len(keys)})


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup")
    p.add_argument("repo", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--db", type=int, required=True)
    p.add_argument("--views", type=int, default=10)
    r = sub.add_parser("read")
    r.add_argument("repo", type=Path)
    r.add_argument("--stage", type=Path, action="append", required=True)
    r.add_argument("--reads", type=int, default=20_000)
    r.add_argument("--warmup", type=int, default=500)
    for name in ("count", "clean"):
        sub.add_parser(name).add_argument("repo", type=Path)
    args = parser.parse_args()
    if args.command == "setup":
        setup(args.repo, args.data, args.project, args.db, args.views)
    elif args.command == "read":
        read(args.repo, args.stage, args.reads, args.warmup)
    elif args.command == "count":
        count(args.repo)
    else:
        clean(args.repo)


if __name__ == "__main__":
    main()
