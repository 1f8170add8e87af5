"""Conveyor's side of the offline feature benchmark (runs in Conveyor's virtualenv).

``python conveyor_features_offline.py <data-dir> <out.parquet> <plan> [memory_limit]``:
a point-in-time training frame of ``entity.parquet`` against every view under
``views/`` (TTL 7 days, created time as known-at), written to ``out.parquet``.
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

from drift_workload import Phases  # noqa: E402
from workload import emit_result  # noqa: E402


def main() -> None:
    data, out, plan = sys.argv[1], sys.argv[2], sys.argv[3]
    memory_limit = sys.argv[4] if len(sys.argv) > 4 else None
    phases = Phases()
    with phases("import"):
        from datetime import timedelta
        from pathlib import Path

        import pyarrow.parquet as pq

        from conveyor.features.offline import ViewFrame, get_training_frame
    views = [
        ViewFrame(
            name=folder.name,
            source=folder,
            join_keys=("customer_id",),
            event_time="event_ts",
            features=("f_float", "f_int"),
            created_time="created_ts",
            ttl=timedelta(days=7),
        )
        for folder in sorted((Path(data) / "views").iterdir())
    ]
    with phases("frame"):
        frame = get_training_frame(
            Path(data) / "entity.parquet", views, plan=plan, memory_limit=memory_limit
        )
    with phases("write"):
        pq.write_table(frame, out)
    import duckdb

    emit_result(
        {
            "tool": "conveyor",
            "plan": plan,
            "rows": frame.num_rows,
            "columns": frame.num_columns,
            "phases": phases.seconds,
            "internal_seconds": time.perf_counter() - START,
            "versions": {"duckdb": duckdb.__version__},
        }
    )


if __name__ == "__main__":
    main()
