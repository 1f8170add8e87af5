"""Offline features: a point-in-time training frame, 100k entity rows x 10 views of 1M rows.

    .venv/bin/python benchmarks/features_offline.py           # full size, Conveyor and Feast
    .venv/bin/python benchmarks/features_offline.py --quick   # 10k x 3 x 50k, a smoke run
    .venv/bin/python benchmarks/features_offline.py --large   # 1M x 10 x 10M, Conveyor only

Seeded data written once to Parquet (``$TMPDIR/conveyor-bench``), in chunks so that
even the large size is generated in bounded memory: an entity frame (customer ids
with duplicates and 5% without any history, times over the last 30 of 60 days) and
10 feature views of two features each, every view in two Parquet files, event
times at second resolution, created times mostly on time, 15% up to an hour late
and 5% backfilled up to 10 days late; TTL 7 days, as known at (created by the
entity row's time).

Each side runs as a whole fresh process (interpreter start, imports, reading the
Parquet files, the frame, writing it to Parquet), timed from the parent with its
peak RSS from ``wait4``:

- **Conveyor** (``get_training_frame``, ``plan="auto"``: a hash join and
  ``arg_max`` per entity row, the ASOF plan for keys with many entity rows);
- **Conveyor, ASOF plan** for every row (the plan before; once);
- **Conveyor under ``memory_limit="512MB"``** (once: bounded memory);
- **Feast 0.67, file offline store** (its default, Dask; once, it takes minutes)
  and **duckdb offline store**, in Feast's own virtualenv: a repository applied
  once beforehand (untimed, as ``feast apply`` is), then
  ``get_historical_features(entity_df, features, full_feature_names=True,
  filter_by_created_timestamp=True).to_arrow()`` (``filter_by_created_timestamp``
  is Feast's "as known at", the same semantics as Conveyor's);
- **the same two stores without ``filter_by_created_timestamp``** (Feast's default
  call: a row created after the entity row's time is seen), checked against
  Feast's rules without the created-time test.

Every output is checked against two independent references, a DuckDB range join of
the entity frame with each view (timestamps compared as timestamps; no
record-setter reduction, no ASOF, no packing):

- **Conveyor's rules**: ``event <= t``, ``event > t - 7 days`` (a value exactly 7
  days old has expired), ``created <= t``; the latest event wins, ties go to the
  later created time, then to the later row in the files. Conveyor's output must
  match it on every row and column, in the entity frame's order.
- **Feast's rules**: the same, except ``event >= t - 7 days`` (Feast keeps a value
  exactly 7 days old), and a tie on both times may go to either row.

Feast's rows are matched to entity rows by a pass-through column ``entity_row``;
rows Feast did not return are counted (and those whose key and time came back on
another row: Feast's file store keeps one row per key and time). ``--large`` checks
a seeded 2% sample of the entity rows (the full range join is the expensive part
there), runs Conveyor once and deletes its data afterwards. Medians over the
rounds; no timing is asserted anywhere. Results: ``results/features_offline.json``
(``-quick``, ``-large``).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from rich.table import Table

PEERS: tuple[str, ...] = ("feast",)

Log = Callable[[str], None]
GIB = 1 << 30
SEED = 20240601
GENERATOR_VERSION = 2
DAY_S = 86_400
CHUNK_ROWS = 1_000_000
#: --large checks the entity rows whose number hashes to 0 modulo this (2%).
SAMPLE_MODULUS = 50

QUICK = {"entity_rows": 10_000, "views": 3, "view_rows": 50_000, "customers": 5_000}
FULL = {"entity_rows": 100_000, "views": 10, "view_rows": 1_000_000, "customers": 50_000}
LARGE = {"entity_rows": 1_000_000, "views": 10, "view_rows": 10_000_000, "customers": 500_000}


@dataclass(frozen=True)
class Side:
    label: str
    tool: str  # "conveyor" or "feast"
    plan: str = "auto"
    memory_limit: str | None = None
    store: str | None = None
    #: Feast: ``filter_by_created_timestamp`` (its "as known at").
    known_at: bool = True
    at_most: int | None = None


SIDES: dict[str, Side] = {
    "conveyor": Side("Conveyor (plan auto)", "conveyor"),
    "conveyor_asof": Side("Conveyor, ASOF plan for every row", "conveyor", plan="asof", at_most=1),
    "conveyor_512mb": Side(
        "Conveyor, memory_limit 512MB", "conveyor", memory_limit="512MB", at_most=1
    ),
    # As known at, as Conveyor: once, it takes minutes.
    "feast_file": Side("Feast 0.67, file offline store", "feast", store="file", at_most=1),
    "feast_duckdb": Side("Feast 0.67, duckdb offline store", "feast", store="duckdb"),
    # Feast's default call, without its created-time filter: other semantics.
    "feast_file_latest": Side(
        "Feast 0.67, file store, no created-time filter", "feast", store="file", known_at=False
    ),
    "feast_duckdb_latest": Side(
        "Feast 0.67, duckdb store, no created-time filter", "feast", store="duckdb", known_at=False
    ),
}
LARGE_SIDES = ("conveyor", "conveyor_512mb")


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
    started = time.perf_counter()
    _generate(folder, size)
    (folder / "done").write_text("")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    log(
        f"features_offline: written in {time.perf_counter() - started:.0f} s; "
        f"this process's peak RSS so far {peak:.2f} GiB"
    )
    return folder


def _generate(folder: Path, size: dict[str, int]) -> None:
    """Chunk by chunk (``CHUNK_ROWS`` rows at a time): the large size never sits in memory."""
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
    schema = pa.schema(
        [
            ("customer_id", pa.int64()),
            # Naive, milliseconds: the engine must line these up with the entity's UTC us.
            ("event_ts", pa.timestamp("ms")),
            ("created_ts", pa.timestamp("ms")),
            ("f_float", pa.float64()),
            ("f_int", pa.int64()),
        ]
    )
    m = size["view_rows"]
    for v in range(size["views"]):
        view = folder / "views" / f"view_{v:02d}"
        view.mkdir(exist_ok=True)
        half = m // 2
        for part, (lo, hi) in enumerate(((0, half), (half, m))):
            with pq.ParquetWriter(view / f"part-{part}.parquet", schema) as writer:
                for c, first in enumerate(range(lo, hi, CHUNK_ROWS)):
                    rows = min(CHUNK_ROWS, hi - first)
                    rng = np.random.default_rng([SEED, 1 + v, part, c])
                    writer.write_table(_view_chunk(rng, rows, size["customers"], start, schema))


def _view_chunk(rng: Any, rows: int, customers: int, start: int, schema: Any) -> Any:
    import numpy as np
    import pyarrow as pa

    event = start + rng.integers(0, 60 * DAY_S, rows)
    kind = rng.random(rows)
    lag = np.where(
        kind < 0.80,
        0,
        np.where(kind < 0.95, rng.integers(0, 3600, rows), rng.integers(0, 10 * DAY_S, rows)),
    )
    return pa.table(
        [
            pa.array(rng.integers(0, customers, rows), pa.int64()),
            pa.array(event * 1000, pa.int64()).cast(pa.timestamp("ms")),
            pa.array((event + lag) * 1000, pa.int64()).cast(pa.timestamp("ms")),
            pa.array(rng.normal(0, 1, rows)),
            pa.array(rng.integers(0, 1000, rows), pa.int64()),
        ],
        schema=schema,
    )


# -- the independent references -------------------------------------------------------


def check(
    data: Path,
    out: Path,
    views: int,
    *,
    rid_column: str | None = None,
    sample: bool = False,
    feast_known_at: bool = True,
) -> dict[str, Any]:
    """Compare ``out`` with the range-join references (Conveyor's and Feast's rules).

    ``rid_column``: the column of ``out`` that holds the entity row's number (Feast's
    pass-through ``entity_row``); without one, row ``i`` of ``out`` is entity row ``i``.
    ``sample``: check only the entity rows whose number hashes to 0 modulo
    ``SAMPLE_MODULUS``. ``feast_known_at``: Feast's rules include its created-time
    filter (``filter_by_created_timestamp=True``).
    """
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    picked = f"WHERE hash(file_row_number) % {SAMPLE_MODULUS} = 0" if sample else ""
    con.execute(
        "CREATE TEMP TABLE ent AS SELECT file_row_number AS rid, customer_id, "
        f"event_timestamp AS t FROM read_parquet('{data / 'entity.parquet'}') {picked}"
    )
    rid = rid_column or "file_row_number"
    con.execute(f"CREATE TEMP TABLE got_all AS SELECT {rid} AS rid, * FROM read_parquet('{out}')")
    con.execute("CREATE TEMP TABLE got AS SELECT * FROM got_all WHERE rid IN (SELECT rid FROM ent)")

    def one(sql: str) -> Any:
        return con.sql(sql).fetchall()[0][0]

    entity_rows = one("SELECT count(*) FROM ent")
    result: dict[str, Any] = {
        "sampled": sample,
        "entity_rows_checked": entity_rows,
        "rows_returned": one("SELECT count(*) FROM got_all"),
        "entity_rows_missing": one(
            "SELECT count(*) FROM ent WHERE rid NOT IN (SELECT rid FROM got)"
        ),
        # Missing, but their key and time came back on another row (duplicate entity rows merged).
        "missing_rows_merged_into_a_duplicate": one(
            """SELECT count(*) FROM ent WHERE rid NOT IN (SELECT rid FROM got)
               AND (customer_id, t) IN (SELECT (customer_id, event_timestamp) FROM got)"""
        ),
        "entity_rows_returned_twice": one(
            "SELECT count(*) FROM (SELECT rid FROM got GROUP BY rid HAVING count(*) > 1)"
        ),
    }
    con.execute("CREATE TEMP TABLE bad_c (rid BIGINT)")
    con.execute("CREATE TEMP TABLE bad_f (rid BIGINT)")
    values = {"conveyor": 0, "feast": 0, "lost": 0, "extra": 0}
    non_null = 0
    for v in range(views):
        name = f"view_{v:02d}"
        source = data / "views" / name / "*.parquet"
        got = f"""
            SELECT rid,
                   CASE WHEN isnan("{name}__f_float") THEN NULL ELSE "{name}__f_float" END AS ff,
                   CASE WHEN isnan("{name}__f_int"::DOUBLE) THEN NULL
                        ELSE "{name}__f_int"::DOUBLE END AS fi
            FROM got"""
        # Every (entity row, feature row) pair visible under Feast's rules, which see
        # a superset of Conveyor's (the row exactly 7 days old; without its created-time
        # filter, rows created later too).
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE pairs AS
            WITH s AS (
                SELECT customer_id, event_ts::TIMESTAMPTZ AS ev, created_ts::TIMESTAMPTZ AS cr,
                       file_index AS fi, file_row_number AS fr, f_float, f_int::DOUBLE AS f_int
                FROM read_parquet('{source}')
            )
            SELECT e.rid, s.*, e.t - INTERVAL 7 DAY AS edge, s.cr <= e.t AS known
            FROM ent e JOIN s ON e.customer_id = s.customer_id
             AND s.ev <= e.t AND s.ev >= e.t - INTERVAL 7 DAY"""
        )
        sql = f"""
            WITH conveyor AS (
                SELECT rid, f_float, f_int FROM pairs WHERE ev > edge AND known
                QUALIFY row_number() OVER (
                    PARTITION BY rid ORDER BY ev DESC, cr DESC, fi DESC, fr DESC
                ) = 1
            ),
            feast AS (
                SELECT rid, f_float, f_int FROM pairs WHERE known OR NOT {feast_known_at}
                QUALIFY rank() OVER (PARTITION BY rid ORDER BY ev DESC, cr DESC) = 1
            ),
            g AS ({got}),
            c AS (
                SELECT g.rid,
                       (g.ff IS DISTINCT FROM p.f_float)::INT
                       + (g.fi IS DISTINCT FROM p.f_int)::INT AS wrong,
                       (g.ff IS NULL AND p.f_float IS NOT NULL)::INT
                       + (g.fi IS NULL AND p.f_int IS NOT NULL)::INT AS lost,
                       (g.ff IS NOT NULL AND p.f_float IS NULL)::INT
                       + (g.fi IS NOT NULL AND p.f_int IS NULL)::INT AS extra,
                       p.f_int IS NOT NULL AS seen
                FROM g LEFT JOIN conveyor p USING (rid)
            ),
            f AS (
                SELECT g.rid, g.ff, g.fi, count(p.rid) AS n,
                       bool_or(g.ff IS NOT DISTINCT FROM p.f_float
                               AND g.fi IS NOT DISTINCT FROM p.f_int) AS ok,
                       min((g.ff IS DISTINCT FROM p.f_float)::INT
                           + (g.fi IS DISTINCT FROM p.f_int)::INT) AS wrong
                FROM g LEFT JOIN feast p USING (rid)
                GROUP BY g.rid, g.ff, g.fi
            ),
            f2 AS (
                SELECT rid, CASE WHEN n = 0 THEN (ff IS NOT NULL)::INT + (fi IS NOT NULL)::INT
                                 WHEN ok THEN 0 ELSE wrong END AS wrong
                FROM f
            )
        """
        con.execute(f"CREATE OR REPLACE TEMP TABLE cv AS {sql} SELECT * FROM c")
        con.execute(f"CREATE OR REPLACE TEMP TABLE fv AS {sql} SELECT * FROM f2")
        con.execute("INSERT INTO bad_c SELECT rid FROM cv WHERE wrong > 0")
        con.execute("INSERT INTO bad_f SELECT rid FROM fv WHERE wrong > 0")
        values["conveyor"] += int(one("SELECT coalesce(sum(wrong), 0) FROM cv"))
        values["feast"] += int(one("SELECT coalesce(sum(wrong), 0) FROM fv"))
        values["lost"] += int(one("SELECT coalesce(sum(lost), 0) FROM cv"))
        values["extra"] += int(one("SELECT coalesce(sum(extra), 0) FROM cv"))
        non_null += int(one("SELECT count(*) FILTER (WHERE seen) FROM cv"))
    result["conveyor_rules"] = {
        "mismatched_rows": one("SELECT count(DISTINCT rid) FROM bad_c"),
        "mismatched_values": values["conveyor"],
        # Of those: null where a value is visible, a value where none is.
        "null_instead_of_a_value": values["lost"],
        "value_instead_of_null": values["extra"],
        "rows_with_a_value": non_null,
    }
    result["feast_rules"] = {
        "mismatched_rows": one("SELECT count(DISTINCT rid) FROM bad_f"),
        "mismatched_values": values["feast"],
    }
    con.close()
    complete = result["entity_rows_missing"] == 0 and result["entity_rows_returned_twice"] == 0
    result["identical_to_conveyor_rules"] = (
        complete and result["conveyor_rules"]["mismatched_rows"] == 0
    )
    result["identical_to_feast_rules"] = complete and result["feast_rules"]["mismatched_rows"] == 0
    return result


# -- measuring --------------------------------------------------------------------------


def _feast_repos(python: Path, data: Path, tmp: Path, log: Log) -> dict[str, Path]:
    """One applied Feast repository per store (untimed: ``feast apply`` is done once)."""
    repos = {}
    for side in SIDES.values():
        if side.tool != "feast" or side.store is None or side.store in repos:
            continue
        repo = tmp / f"feast-{side.store}"
        harness.run_side(
            python,
            harness.PEER_SCRIPTS / "feast_features_offline.py",
            ["setup", str(repo), "--data", str(data), "--store", side.store],
            label="feast",
            log=log,
        )
        repos[side.store] = repo
    return repos


def _measure(
    name: str, side: Side, data: Path, out: Path, feast: Path | None, repos: dict[str, Path]
) -> dict[str, Any]:
    if side.tool == "conveyor":
        args = [str(data), str(out), side.plan, *([side.memory_limit] if side.memory_limit else [])]
        return harness.measure_process(
            Path(sys.executable), "conveyor_features_offline.py", args, label=side.label
        )
    assert feast is not None and side.store is not None
    args = ["run", str(repos[side.store]), "--data", str(data), "--out", str(out)]
    if not side.known_at:
        args.append("--latest")
    return harness.measure_process(feast, "feast_features_offline.py", args, label=side.label)


def run(
    *,
    quick: bool,
    large: bool = False,
    pythons: dict[str, Path] | None = None,
    rounds: int | None = None,
    sides: tuple[str, ...] | None = None,
    keep_data: bool = False,
    log: Log = print,
    **_: Any,
) -> dict[str, Any]:
    """Measure every side; write and return ``results/features_offline[-quick|-large].json``."""
    size = LARGE if large else QUICK if quick else FULL
    rounds = rounds or (1 if quick or large else 3)
    chosen = sides or (LARGE_SIDES if large else tuple(SIDES))
    machine = harness.machine()
    if large:
        free = shutil.disk_usage(tempfile.gettempdir()).free / GIB
        log(f"features_offline: {free:.0f} GiB free in {tempfile.gettempdir()}")
        if free < 10:
            raise RuntimeError(f"--large needs about 6 GiB of disk; {free:.0f} GiB free")
    data = data_dir(size, log)
    disk = sum(p.stat().st_size for p in data.rglob("*.parquet"))
    for path in data.rglob("*.parquet"):
        with path.open("rb") as f:  # into the page cache: no side pays the first read
            while f.read(1 << 24):
                pass
    feast = None
    if any(SIDES[s].tool == "feast" for s in chosen):
        feast = (pythons or {}).get("feast") or harness.ensure_venv("feast", log)
    load_before = os.getloadavg()
    started = time.perf_counter()
    raw: dict[str, list[dict[str, Any]]] = {side: [] for side in chosen}
    checks: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
            repos = _feast_repos(feast, data, Path(tmp), log) if feast else {}
            for r in range(rounds):
                order = list(chosen) if r % 2 == 0 else list(chosen)[::-1]
                for name in order:
                    side = SIDES[name]
                    if side.at_most is not None and len(raw[name]) >= side.at_most:
                        continue
                    out = Path(tmp) / f"{name}.parquet"
                    took = _measure(name, side, data, out, feast, repos)
                    raw[name].append(took)
                    log(
                        f"features_offline: round {r + 1}/{rounds}, {side.label}: "
                        f"{took['wall_seconds']:.2f} s (cpu {took['cpu_seconds']:.2f} s), "
                        f"peak {took['peak_rss_bytes'] / GIB:.2f} GiB, {took['rows']:,} rows"
                    )
                    if name not in checks:
                        rid = "entity_row" if side.tool == "feast" else None
                        checks[name] = check(
                            data,
                            out,
                            size["views"],
                            rid_column=rid,
                            sample=large,
                            feast_known_at=side.known_at,
                        )
                        log(f"features_offline: {side.label}: reference check {checks[name]}")
                    out.unlink()
    finally:
        if large and not keep_data:
            shutil.rmtree(data)
            log(f"features_offline: deleted {data}")
    summary_rows = {}
    for name, runs in raw.items():
        side = SIDES[name]
        summary_rows[name] = {
            "label": side.label,
            "tool": side.tool,
            "plan": side.plan if side.tool == "conveyor" else None,
            "store": side.store,
            "filter_by_created_timestamp": side.known_at if side.tool == "feast" else None,
            "memory_limit": side.memory_limit,
            "runs": len(runs),
            "median_wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
            "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
            "median_peak_rss_gib": statistics.median(r["peak_rss_bytes"] for r in runs) / GIB,
            "median_frame_seconds": statistics.median(r["phases"]["frame"] for r in runs),
            "median_import_seconds": statistics.median(r["phases"]["import"] for r in runs),
            "rows": runs[0]["rows"],
            "check": checks[name],
        }
    result: dict[str, Any] = {
        "benchmark": "features_offline",
        "timestamp": harness.timestamp(),
        "quick": quick,
        "large": large,
        "rounds": rounds,
        "workload": {
            **size,
            "features_per_view": 2,
            "ttl_days": 7,
            "as_known_at": True,
            "files_per_view": 2,
            "parquet_bytes": disk,
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
        # The data is generated in this process (when not cached): its peak bounds the generator's.
        "parent_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
        "notes": [
            "Whole-process wall time: interpreter start, imports, reading Parquet, "
            "the frame, writing it to Parquet. Feast's repository is applied beforehand, "
            "untimed; its process opens the store and reads the entity frame into pandas.",
            "check: every row and feature column (a seeded 2% of the entity rows with "
            "--large) against DuckDB range-join references: Conveyor's rules (event > t - 7d, "
            "ties by created time then file order) and Feast's (event >= t - 7d; a tie on "
            "both times may go to either row). Feast rows are matched by a pass-through "
            "entity_row column.",
            "Feast runs with filter_by_created_timestamp=True (its 'as known at').",
        ],
        "raw": raw,
    }
    stem = "features_offline" + ("-large" if large else "-quick" if quick else "")
    result["path"] = str(harness.write_result(stem, result).relative_to(harness.ROOT))
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
    columns = ("side", "runs", "wall s", "cpu s", "frame s", "peak GiB", "rows")
    for column in (*columns, "rows missing", "differ (Conveyor rules)", "differ (own rules)"):
        table.add_column(column, justify="left" if column == "side" else "right")
    for row in result["sides"].values():
        c = row["check"]
        own = c["feast_rules"] if row["tool"] == "feast" else c["conveyor_rules"]
        table.add_row(
            row["label"],
            str(row["runs"]),
            f"{row['median_wall_seconds']:.2f}",
            f"{row['median_cpu_seconds']:.2f}",
            f"{row['median_frame_seconds']:.2f}",
            f"{row['median_peak_rss_gib']:.2f}",
            f"{row['rows']:,}",
            f"{c['entity_rows_missing']:,}",
            f"{c['conveyor_rules']['mismatched_rows']:,}",
            f"{own['mismatched_rows']:,}",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small workload, for a smoke run")
    size.add_argument("--large", action="store_true", help="1M entity rows x 10 views of 10M")
    parser.add_argument("--rounds", type=int, help="default 3, or 1 with --quick or --large")
    parser.add_argument("--side", action="append", choices=list(SIDES), help="only these sides")
    parser.add_argument("--keep-data", action="store_true", help="--large: keep its Parquet files")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=180)

    def log(message: str) -> None:
        console.print(message, highlight=False, markup=False)

    result = run(
        quick=args.quick,
        large=args.large,
        rounds=args.rounds,
        sides=tuple(args.side) if args.side else None,
        keep_data=args.keep_data,
        log=log,
    )
    console.print(summary(result))
    log(f"features_offline: {result['load']['seconds']:.0f} s, written to {result['path']}")
    conveyor_ok = all(
        s["check"]["identical_to_conveyor_rules"]
        for s in result["sides"].values()
        if s["tool"] == "conveyor"
    )
    return 0 if conveyor_ok else 1


if __name__ == "__main__":
    sys.exit(main())
