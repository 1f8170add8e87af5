"""Validation: 10M rows x 20 columns x 50 expectations, from the Parquet file to the report.

Every tool runs as a whole fresh process (interpreter start, imports,
reading, validating, reporting), timed from the parent and with its peak RSS
from ``wait4``:

- **Conveyor** (``conveyor.data.validation.validate(path, ..., split=False)``):
  DuckDB scans the file; nothing is loaded into memory. Also measured: the
  same with ``split=True``, which reads the batch into Arrow and divides it
  into valid and invalid rows;
- **DuckDB query**: one hand-written query with the 50 aggregates, the baseline
  (issue 3's target: Conveyor within 1.2x of it, under 1 GiB peak);
- **pandera** (``.bench-venvs/pandera``): ``pd.read_parquet`` then a lazy
  ``DataFrameSchema.validate``;
- **Great Expectations** (``.bench-venvs/great_expectations``): an ephemeral GX
  1.x context validating the pandas frame; about two minutes, so it runs once.

The data (seeded, written once and cached in the temp folder) plants
violations that break 10 of the 50 expectations; every tool must report
exactly those (``peers/validation_workload.py``). Results go to
``results/validation.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
from peers.validation_workload import (
    CATEGORIES,
    CHANNELS,
    COLUMNS,
    COUNTRIES,
    CURRENCIES,
    DEVICES,
    EXPECTATIONS,
    FAILING,
    FULL_ROWS,
    NOW,
    QUICK_ROWS,
    SEED,
    STATUSES,
    TAX_RATES,
)
from rich.table import Table

# This benchmark's peers; registered with the shared harness, which installs them.
PEER_PACKAGES = {
    "pandera": ("pandera", "pandas", "pyarrow"),
    "great_expectations": ("great_expectations", "pyarrow"),
}
harness.PEERS.update(PEER_PACKAGES)
PEERS = tuple(PEER_PACKAGES)

Log = Callable[[str], None]

#: tool -> (label, script, virtualenv peer or None for Conveyor's, options, runs at most)
SIDES: dict[str, tuple[str, str, str | None, dict[str, Any], int | None]] = {
    "conveyor": ("Conveyor validate()", "conveyor_validation.py", None, {}, None),
    "duckdb": ("DuckDB query (hand-written)", "duckdb_validation.py", None, {}, None),
    "conveyor_split": (
        "Conveyor validate(split=True)",
        "conveyor_validation.py",
        None,
        {"split": True},
        None,
    ),
    "pandera": ("pandera", "pandera_validation.py", "pandera", {}, None),
    "great_expectations": (
        "Great Expectations",
        "great_expectations_validation.py",
        "great_expectations",
        {},
        1,
    ),
}
ROW_GROUP = 1_000_000
_GENERATOR_VERSION = 1
GIB = 1 << 30


# -- the data ---------------------------------------------------------------------------


def data_file(rows: int, log: Log = print) -> Path:
    """The seeded Parquet file of ``rows`` rows, generated once and cached."""
    folder = Path(tempfile.gettempdir()) / "conveyor-bench"
    folder.mkdir(exist_ok=True)
    path = folder / f"validation-v{_GENERATOR_VERSION}-{rows}-{SEED}.parquet"
    if not path.exists():
        log(f"validation: writing {rows:,} rows to {path}")
        partial = path.with_suffix(".partial")
        _generate(partial, rows)
        partial.rename(path)
    return path


def _generate(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    now_us = int(NOW.timestamp() * 1e6)
    with pq.ParquetWriter(path, _schema()) as writer:
        for chunk, start in enumerate(range(0, rows, ROW_GROUP)):
            size = min(ROW_GROUP, rows - start)
            rng = np.random.default_rng([SEED, chunk])
            last = start + size == rows
            writer.write_table(_chunk(rng, start, size, last, now_us, np, pa, pc))


def _schema() -> Any:
    import pyarrow as pa

    types = {
        "int64": pa.int64(),
        "int32": pa.int32(),
        "double": pa.float64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([(name, types[kind]) for name, kind in COLUMNS.items()])


def _chunk(
    rng: Any, start: int, size: int, last: bool, now_us: int, np: Any, pa: Any, pc: Any
) -> Any:
    def planted(rate: float) -> Any:
        return rng.random(size) < rate

    def choice(values: list[Any], bad: Any = None, rate: float = 0.0) -> Any:
        codes = rng.integers(0, len(values), size)
        dictionary = list(values)
        if bad is not None:
            dictionary.append(bad)
            codes = np.where(planted(rate), len(values), codes)
        return pa.DictionaryArray.from_arrays(codes.astype(np.int32), pa.array(dictionary))

    ids = np.arange(start, start + size, dtype=np.int64)
    if last:
        ids[-5:] = np.arange(5)  # five ids seen before: ten rows share an id
    amount = rng.lognormal(3.0, 1.0, size)
    amount = np.where(planted(1e-4), -amount, amount)
    amount = np.where(planted(5e-5), 60_000 + amount, amount)
    quantity = np.where(planted(1e-4), 0, rng.integers(1, 101, size)).astype(np.int32)
    age = np.where(planted(1e-4), 150, rng.integers(18, 91, size)).astype(np.int32)
    created = now_us - rng.integers(60_000_000, 30 * 86_400_000_000, size)
    updated = created + rng.integers(0, 86_400_000_000, size)
    emails = [f"user{k}@example.com" for k in range(10_000)]
    zips = [f"{k:05d}" for k in rng.choice(100_000, 10_000, replace=False)]
    timestamp = pa.timestamp("us", tz="UTC")
    columns = {
        "id": pa.array(ids),
        "customer_id": pa.array(rng.integers(1, 1_000_001, size, dtype=np.int64)),
        "amount": pa.array(amount, mask=planted(1e-3)),
        "quantity": pa.array(quantity),
        "unit_price": pa.array(rng.uniform(0.5, 500.0, size)),
        "discount": pa.array(rng.uniform(0.0, 0.5, size), mask=planted(0.01)),
        "tax_rate": pa.array(np.asarray(TAX_RATES)[rng.integers(0, len(TAX_RATES), size)]),
        "merchant_category": choice(CATEGORIES, "unknown", 1e-4),
        "country": choice(COUNTRIES),
        "currency": choice(CURRENCIES),
        "channel": choice(CHANNELS),
        "status": choice(STATUSES),
        "email": choice(emails, "not-an-email", 1e-4),
        "zip": choice(zips, "ABCDE", 1e-4),
        "created_at": pa.array(created, timestamp),
        "updated_at": pa.array(updated, timestamp),
        "age": pa.array(age),
        "score": pa.array(rng.random(size)),
        "is_fraud": pa.array(rng.random(size) < 0.01),
        "device": choice(DEVICES),
    }
    device_nulls = pa.array(planted(0.02))
    columns["device"] = pc.if_else(
        device_nulls, pa.scalar(None, pa.string()), columns["device"].cast(pa.string())
    )
    table = pa.table(
        {
            k: v.cast(pa.string()) if pa.types.is_dictionary(v.type) else v
            for k, v in columns.items()
        }
    )
    return table.cast(_schema())


# -- measuring one process ------------------------------------------------------------------


def measure(python: Path, script: str, args: list[str], *, label: str, log: Log) -> dict[str, Any]:
    """Run one side as a whole process (see harness.measure_process) and log it."""
    result = harness.measure_process(python, script, args, label=label)
    wall = result["wall_seconds"]
    log(
        f"validation: {label}: {wall:.2f} s, peak {result['peak_rss_bytes'] / GIB:.2f} GiB, "
        f"{len(result['failed'])} failed"
    )
    return result


def run(
    *,
    quick: bool,
    pythons: dict[str, Path],
    rounds: int | None = None,
    log: Log = print,
    **_: Any,
) -> dict[str, Any]:
    """Measure every tool; write and return ``results/validation.json``.

    Rounds alternate the order of the tools, so a burst of someone else's
    work on the shared machine lands on all of them alike; Great
    Expectations runs once (about two minutes a run).
    """
    rows = QUICK_ROWS if quick else FULL_ROWS
    rounds = rounds or (1 if quick else 3)
    path = data_file(rows, log)
    path.read_bytes()  # into the page cache, so no tool pays the first read from disk
    interpreters = {"conveyor": Path(sys.executable), **pythons}
    raw: dict[str, list[dict[str, Any]]] = {tool: [] for tool in SIDES}
    for r in range(rounds):
        order = list(SIDES) if r % 2 == 0 else list(SIDES)[::-1]
        for tool in order:
            label, script, peer, options, at_most = SIDES[tool]
            if at_most is not None and len(raw[tool]) >= at_most:
                continue
            python = interpreters[peer or "conveyor"]
            args = [str(path), json.dumps(options)]
            log(f"validation: round {r + 1}/{rounds}, {label}")
            raw[tool].append(measure(python, script, args, label=label, log=log))
    result = _report(raw, rows, path, quick)
    result["path"] = str(harness.write_result("validation", result).relative_to(harness.ROOT))
    return result


def _report(
    raw: dict[str, list[dict[str, Any]]], rows: int, path: Path, quick: bool
) -> dict[str, Any]:
    tools: dict[str, Any] = {}
    for tool, runs in raw.items():
        label = SIDES[tool][0]
        walls = [r["wall_seconds"] for r in runs]
        peaks = [r["peak_rss_bytes"] for r in runs]
        tools[tool] = {
            "label": label,
            "wall_seconds": walls,
            "wall_seconds_median": statistics.median(walls),
            "peak_rss_bytes": peaks,
            "peak_rss_gib_median": statistics.median(peaks) / GIB,
            "phases_first_run": runs[0]["phases"],
            "failed": runs[0]["failed"],
            "counts": runs[0]["counts"],
            "agrees_with_planted": runs[0]["failed"] == FAILING,
            "versions": runs[0]["versions"],
        }
    baseline = tools["duckdb"]["wall_seconds_median"]
    for entry in tools.values():
        entry["vs_duckdb_query"] = entry["wall_seconds_median"] / baseline
    conveyor = tools["conveyor"]
    exact = tools["duckdb"]["counts"]
    return {
        "benchmark": "validation",
        "timestamp": harness.timestamp(),
        "quick": quick,
        "rows": rows,
        "columns": 20,
        "expectations": len(EXPECTATIONS),
        "data_file_bytes": path.stat().st_size,
        "machine": harness.machine(),
        "planted_failures": FAILING,
        "tools": tools,
        "agreement": {
            "all_tools_find_the_planted_failures": all(
                t["agrees_with_planted"] for t in tools.values()
            ),
            "conveyor_counts_equal_duckdb_query": {
                k: v for k, v in conveyor["counts"].items() if exact.get(k) != v
            }
            == {},
            "count_differences": _differences(tools),
        },
        "targets": {
            "conveyor_vs_duckdb_query": conveyor["vs_duckdb_query"],
            "within_1_2x": conveyor["vs_duckdb_query"] <= 1.2,
            "conveyor_peak_gib": conveyor["peak_rss_gib_median"],
            "under_1_gib": conveyor["peak_rss_gib_median"] < 1.0,
        },
    }


def _differences(tools: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per tool, the row counts that differ from the hand-written query's."""
    exact = tools["duckdb"]["counts"]
    out: dict[str, dict[str, Any]] = {}
    for tool, entry in tools.items():
        diff = {
            name: {"tool": count, "duckdb_query": exact.get(name)}
            for name, count in entry["counts"].items()
            if name in exact and count != exact[name]
        }
        if diff:
            out[tool] = diff
    return out


def summary(result: dict[str, Any]) -> Table:
    size = (
        f"{result['rows']:,} rows x {result['columns']} columns x "
        f"{result['expectations']} expectations"
    )
    table = Table(
        title=f"validation: {size}, whole process from the Parquet file", title_justify="left"
    )
    for column in (
        "tool",
        "wall s (median)",
        "vs DuckDB query",
        "peak RSS",
        "runs",
        "failed found",
        "agrees",
    ):
        table.add_column(column, justify="left" if column == "tool" else "right")
    for entry in result["tools"].values():
        table.add_row(
            entry["label"],
            f"{entry['wall_seconds_median']:.2f}",
            f"{entry['vs_duckdb_query']:.2f}x",
            f"{entry['peak_rss_gib_median']:.2f} GiB",
            str(len(entry["wall_seconds"])),
            f"{len(entry['failed'])} of {len(result['planted_failures'])}",
            "yes" if entry["agrees_with_planted"] else "NO",
        )
    targets = result["targets"]
    ratio, peak = targets["conveyor_vs_duckdb_query"], targets["conveyor_peak_gib"]
    table.caption = (
        f"targets: Conveyor within 1.2x of the DuckDB query: {ratio:.2f}x "
        f"({'met' if targets['within_1_2x'] else 'missed'}); under 1 GiB: "
        f"{peak:.2f} GiB ({'met' if targets['under_1_gib'] else 'missed'})"
    )
    return table
