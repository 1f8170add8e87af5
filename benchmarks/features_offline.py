"""Offline features: a point-in-time training frame, 100k entity rows x 10 views of 1M rows.

    .venv/bin/python benchmarks/features_offline.py           # full size
    .venv/bin/python benchmarks/features_offline.py --quick   # 10k x 3 x 50k, a smoke run

Seeded data written once to Parquet (``$TMPDIR/conveyor-bench``): an entity
frame (customer ids with duplicates and 5% without any history, times over
the last 30 of 60 days) and 10 feature views of two features each, every view
in two Parquet files, event times at second resolution, created times mostly
on time, 15% up to an hour late and 5% backfilled up to 10 days late; TTL 7
days, as-known-at on.

Each side runs as a whole fresh process (interpreter start, imports, reading
the Parquet files, the frame, writing it to Parquet), timed from the parent
with its peak RSS from ``wait4``:

- **Conveyor, ASOF plan** (``get_training_frame``, the default);
- **Conveyor, window plan** (``plan="window"``: UNION ALL + ``last_value IGNORE NULLS``);
- **Conveyor, ASOF under ``memory_limit="512MB"``** (once: spilling, bounded memory).

Every output is checked on every row and column against an independent
reference: a DuckDB range join of the entity frame with each view on
``event_ts <= t AND event_ts > t - INTERVAL 7 DAY AND created_ts <= t`` and
the latest row picked by ``row_number()`` (timestamps compared as
timestamps, not as epoch nanoseconds; no record-setter reduction, no ASOF).
Medians over the rounds; no timing is asserted anywhere. Feast is not
measured yet. Results: ``results/features_offline.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from rich.table import Table

PEERS: tuple[str, ...] = ()

Log = Callable[[str], None]
GIB = 1 << 30
SEED = 20240601
GENERATOR_VERSION = 1
DAY_S = 86_400

FULL = {"entity_rows": 100_000, "views": 10, "view_rows": 1_000_000, "customers": 50_000}
QUICK = {"entity_rows": 10_000, "views": 3, "view_rows": 50_000, "customers": 5_000}

#: side -> (label, plan, memory_limit, runs at most)
SIDES: dict[str, tuple[str, str, str | None, int | None]] = {
    "asof": ("Conveyor ASOF plan", "asof", None, None),
    "window": ("Conveyor window plan", "window", None, None),
    "asof_512mb": ("Conveyor ASOF plan, memory_limit 512MB", "asof", "512MB", 1),
}


# -- the data -------------------------------------------------------------------------


def data_dir(size: dict[str, int], log: Log = print) -> Path:
    """The seeded Parquet files, generated once and cached."""
    stem = "features-v{}-{entity_rows}-{views}-{view_rows}-{customers}-{seed}".format(
        GENERATOR_VERSION, seed=SEED, **size
    )
    folder = Path(tempfile.gettempdir()) / "conveyor-bench" / stem
    if (folder / "done").exists():
        return folder
    log(f"features_offline: writing {size} to {folder}")
    _generate(folder, size)
    (folder / "done").write_text("")
    return folder


def _generate(folder: Path, size: dict[str, int]) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = 1_700_000_000  # seconds since the epoch: day 0
    rng = np.random.default_rng([SEED, 0])
    n = size["entity_rows"]
    ids = rng.integers(0, size["customers"], n)
    ids[rng.random(n) < 0.05] += 10_000_000  # no history at all
    times = start + rng.integers(30 * DAY_S, 60 * DAY_S, n)
    (folder / "views").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array(ids, pa.int64()),
                "event_timestamp": pa.array(times * 1_000_000, pa.int64()).cast(
                    pa.timestamp("us", "UTC")
                ),
                "label": pa.array(rng.integers(0, 2, n), pa.int8()),
            }
        ),
        folder / "entity.parquet",
    )
    for v in range(size["views"]):
        rng = np.random.default_rng([SEED, 1 + v])
        m = size["view_rows"]
        event = start + rng.integers(0, 60 * DAY_S, m)
        kind = rng.random(m)
        lag = np.where(
            kind < 0.80,
            0,
            np.where(kind < 0.95, rng.integers(0, 3600, m), rng.integers(0, 10 * DAY_S, m)),
        )
        table = pa.table(
            {
                "customer_id": pa.array(rng.integers(0, size["customers"], m), pa.int64()),
                # Naive, milliseconds: the engine must line these up with the entity's UTC us.
                "event_ts": pa.array(event * 1000, pa.int64()).cast(pa.timestamp("ms")),
                "created_ts": pa.array((event + lag) * 1000, pa.int64()).cast(pa.timestamp("ms")),
                "f_float": pa.array(rng.normal(0, 1, m)),
                "f_int": pa.array(rng.integers(0, 1000, m), pa.int64()),
            }
        )
        view = folder / "views" / f"view_{v:02d}"
        view.mkdir(exist_ok=True)
        half = m // 2
        pq.write_table(table.slice(0, half), view / "part-0.parquet")
        pq.write_table(table.slice(half), view / "part-1.parquet")


# -- the independent reference --------------------------------------------------------


def check(data: Path, out: Path, views: int) -> dict[str, Any]:
    """Compare ``out`` with the range-join reference on every row and feature column."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        "CREATE TEMP TABLE ent AS SELECT file_row_number AS rid, customer_id, "
        f"event_timestamp AS t FROM read_parquet('{data / 'entity.parquet'}')"
    )
    con.execute(
        f"CREATE TEMP TABLE got AS SELECT file_row_number AS rid, * FROM read_parquet('{out}')"
    )
    rows = con.execute("SELECT count(*) FROM got").fetchone()
    entity_rows = con.execute("SELECT count(*) FROM ent").fetchone()
    mismatches = 0
    non_null = 0
    for v in range(views):
        name = f"view_{v:02d}"
        source = data / "views" / name / "*.parquet"
        ref = f"""
            WITH s AS (
                SELECT customer_id, event_ts::TIMESTAMPTZ AS ev, created_ts::TIMESTAMPTZ AS cr,
                       file_index AS fi, file_row_number AS fr, f_float, f_int
                FROM read_parquet('{source}')
            ),
            pairs AS (
                SELECT e.rid, s.f_float, s.f_int
                FROM ent e JOIN s ON e.customer_id = s.customer_id
                 AND s.ev <= e.t AND s.ev > e.t - INTERVAL 7 DAY AND s.cr <= e.t
                QUALIFY row_number() OVER (
                    PARTITION BY e.rid ORDER BY s.ev DESC, s.cr DESC, s.fi DESC, s.fr DESC
                ) = 1
            )
            SELECT count(*) FILTER (
                       WHERE g."{name}__f_float" IS DISTINCT FROM p.f_float
                          OR g."{name}__f_int" IS DISTINCT FROM p.f_int
                   ),
                   count(p.f_int)
            FROM got g LEFT JOIN pairs p USING (rid)
        """
        bad, found = con.execute(ref).fetchone() or (0, 0)
        mismatches += int(bad)
        non_null += int(found)
    con.close()
    return {
        "rows": rows[0] if rows else None,
        "entity_rows": entity_rows[0] if entity_rows else None,
        "mismatched_rows_over_views": mismatches,
        "non_null_values_over_views": non_null,
        "identical": mismatches == 0 and rows == entity_rows,
    }


# -- measuring --------------------------------------------------------------------------


def run(
    *,
    quick: bool,
    pythons: dict[str, Path] | None = None,
    rounds: int | None = None,
    log: Log = print,
    **_: Any,
) -> dict[str, Any]:
    """Measure every side; write and return ``results/features_offline.json``."""
    size = QUICK if quick else FULL
    rounds = rounds or (1 if quick else 3)
    machine = harness.machine()
    data = data_dir(size, log)
    for path in data.rglob("*.parquet"):
        path.read_bytes()  # into the page cache: no side pays the first read from disk
    load_before = os.getloadavg()
    started = time.perf_counter()
    raw: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    checks: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        for r in range(rounds):
            order = list(SIDES) if r % 2 == 0 else list(SIDES)[::-1]
            for side in order:
                label, plan, memory_limit, at_most = SIDES[side]
                if at_most is not None and len(raw[side]) >= at_most:
                    continue
                out = Path(tmp) / f"{side}.parquet"
                args = [str(data), str(out), plan, *([memory_limit] if memory_limit else [])]
                result = harness.measure_process(
                    Path(sys.executable), "conveyor_features_offline.py", args, label=label
                )
                raw[side].append(result)
                log(
                    f"features_offline: round {r + 1}/{rounds}, {label}: "
                    f"{result['wall_seconds']:.1f} s (cpu {result['cpu_seconds']:.1f} s), "
                    f"peak {result['peak_rss_bytes'] / GIB:.2f} GiB"
                )
                if side not in checks:
                    checks[side] = check(data, out, size["views"])
                    log(f"features_offline: {label}: reference check {checks[side]}")
    summary_rows = {}
    for side, runs in raw.items():
        summary_rows[side] = {
            "label": SIDES[side][0],
            "plan": SIDES[side][1],
            "memory_limit": SIDES[side][2],
            "runs": len(runs),
            "median_wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
            "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
            "median_peak_rss_gib": statistics.median(r["peak_rss_bytes"] for r in runs) / GIB,
            "median_frame_seconds": statistics.median(r["phases"]["frame"] for r in runs),
            "check": checks[side],
        }
    result: dict[str, Any] = {
        "benchmark": "features_offline",
        "timestamp": harness.timestamp(),
        "quick": quick,
        "rounds": rounds,
        "workload": {
            **size,
            "features_per_view": 2,
            "ttl_days": 7,
            "as_known_at": True,
            "files_per_view": 2,
            "generator_version": GENERATOR_VERSION,
            "seed": SEED,
        },
        "machine": machine,
        "load": {
            "loadavg_1_5_15_before": load_before,
            "loadavg_1_5_15_after": os.getloadavg(),
            "seconds": time.perf_counter() - started,
        },
        "sides": summary_rows,
        "notes": [
            "Whole-process wall time: interpreter start, imports, reading Parquet, "
            "the frame, writing it to Parquet.",
            "check: every row and feature column against a DuckDB range-join reference.",
            "Feast not measured yet.",
        ],
        "raw": raw,
    }
    result["path"] = str(harness.write_result("features_offline", result).relative_to(harness.ROOT))
    return result


def summary(result: dict[str, Any]) -> Table:
    load = result["load"]
    w = result["workload"]
    table = Table(
        title=f"features_offline: {w['entity_rows']:,} entity rows x {w['views']} views of "
        f"{w['view_rows']:,} rows; medians of {result['rounds']} round(s); load average "
        f"{load['loadavg_1_5_15_before'][0]:.1f} -> {load['loadavg_1_5_15_after'][0]:.1f} "
        f"on {result['machine']['nproc']} cores",
        title_justify="left",
    )
    for column in ("side", "runs", "wall s", "cpu s", "frame s", "peak GiB", "rows identical"):
        table.add_column(column, justify="left" if column == "side" else "right")
    for row in result["sides"].values():
        table.add_row(
            row["label"],
            str(row["runs"]),
            f"{row['median_wall_seconds']:.1f}",
            f"{row['median_cpu_seconds']:.1f}",
            f"{row['median_frame_seconds']:.1f}",
            f"{row['median_peak_rss_gib']:.2f}",
            "yes" if row["check"]["identical"] else "NO",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workload, for a smoke run")
    parser.add_argument("--rounds", type=int, help="default 3, or 1 with --quick")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)

    def log(message: str) -> None:
        console.print(message, highlight=False, markup=False)

    result = run(quick=args.quick, rounds=args.rounds, log=log)
    console.print(summary(result))
    log(f"features_offline: {result['load']['seconds']:.0f} s, written to {result['path']}")
    return 0 if all(s["check"]["identical"] for s in result["sides"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
