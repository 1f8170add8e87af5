"""Feast's side of ``benchmarks/features_offline.py``; runs in .bench-venvs/feast.

    python feast_features_offline.py setup REPO --data DIR --store file|duckdb
    python feast_features_offline.py run REPO --data DIR --out OUT.parquet

``setup`` (untimed, once per store: what ``feast apply`` does) writes
``REPO/feature_store.yaml`` (the ``file`` offline store, Feast's default, which is
its Dask store, or its ``duckdb`` store; a local registry; a SQLite online store
that is never used) and applies the same definitions as Conveyor's side: entity
``customer`` (``customer_id``, int64) and one view per folder under
``DIR/views`` (``view_00`` ..), its two Parquet files as the source
(``event_ts``, created time ``created_ts``), features ``f_float`` (float64) and
``f_int`` (int64), TTL 7 days.

``run`` is the timed process: it opens the store, reads ``DIR/entity.parquet``
into pandas (Feast takes a pandas entity frame), adds the column
``entity_row`` (the row's number, passed through by Feast, so the parent can
tell which entity rows came back), calls ``get_historical_features(entity_df,
features, full_feature_names=True, filter_by_created_timestamp=True)`` (Feast
0.67's "as known at": a value created after the entity row's time is not
seen; ``--latest``: without it, Feast's default), ``.to_arrow()``, and writes the
table to ``OUT``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

START = time.perf_counter()

from drift_workload import Phases  # noqa: E402
from workload import emit_result  # noqa: E402

TTL = timedelta(days=7)


def _views(data: Path) -> list[Path]:
    return sorted(p for p in (data / "views").iterdir() if p.is_dir())


def setup(repo: Path, data: Path, store_type: str) -> None:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.data_format import ParquetFormat
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: bench_offline\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: sqlite\n"
        f"  path: {repo / 'online.db'}\n"
        "offline_store:\n"
        f"  type: {store_type}\n"
        "entity_key_serialization_version: 3\n"
    )
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    objects: list[Any] = [customer]
    for folder in _views(data):
        source = FileSource(
            name=f"{folder.name}_source",
            path=str(folder / "*.parquet"),
            file_format=ParquetFormat(),
            timestamp_field="event_ts",
            created_timestamp_column="created_ts",
        )
        view = FeatureView(
            name=folder.name,
            entities=[customer],
            ttl=TTL,
            schema=[Field(name="f_float", dtype=Float64), Field(name="f_int", dtype=Int64)],
            source=source,
            online=False,
        )
        objects += [source, view]
    FeatureStore(repo_path=str(repo)).apply(objects)
    import feast

    emit_result({"feast": feast.__version__, "store": store_type})


def run(repo: Path, data: Path, out: Path, *, known_at: bool) -> None:
    phases = Phases()
    with phases("import"):
        import numpy as np
        import pandas as pd
        import pyarrow.parquet as pq
        from feast import FeatureStore
    with phases("open"):
        store = FeatureStore(repo_path=str(repo))
        features = [f"{p.name}:{f}" for p in _views(data) for f in ("f_float", "f_int")]
    with phases("read_entity"):
        entity_df: pd.DataFrame = pq.read_table(data / "entity.parquet").to_pandas()
        entity_df["entity_row"] = np.arange(len(entity_df), dtype=np.int64)
    with phases("frame"):
        job = store.get_historical_features(
            entity_df=entity_df,
            features=features,
            full_feature_names=True,
            filter_by_created_timestamp=known_at,
        )
        table = job.to_arrow()
    with phases("write"):
        pq.write_table(table, out)
    import feast

    emit_result(
        {
            "tool": "feast",
            "store": store.config.offline_store.type,
            "filter_by_created_timestamp": known_at,
            "rows": table.num_rows,
            "columns": table.num_columns,
            "phases": phases.seconds,
            "internal_seconds": time.perf_counter() - START,
            "versions": {"feast": feast.__version__},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["setup", "run"])
    parser.add_argument("repo", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--store", choices=["file", "duckdb"], default="file")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--latest", action="store_true", help="without filter_by_created_timestamp (the default)"
    )
    args = parser.parse_args()
    if args.command == "setup":
        setup(args.repo, args.data, args.store)
    else:
        if args.out is None:
            sys.exit("run needs --out")
        run(args.repo, args.data, args.out, known_at=not args.latest)


if __name__ == "__main__":
    main()
