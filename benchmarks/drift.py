"""Drift: a report on 1M rows x 100 columns per frame, from the Parquet files.

Two seeded frames (reference and current) of 50 numeric and 50 categorical
columns; 10 numeric and 10 categorical columns move between them, several
of them below Evidently's default thresholds (``peers/drift_workload.py``).
Every tool runs as a whole fresh process (interpreter start, imports,
reading both files, the tests, the verdict), timed from the parent with its
peak RSS from ``wait4``:

- **Conveyor** (``DriftDetector().fit(reference.parquet).score(current.parquet)``
  and ``to_report``): column by column from the files;
- **scipy per column** (the baseline a user writes): ``pandas.read_parquet``
  of both frames, then ``ks_2samp`` per numeric column and
  ``chi2_contingency`` (no Yates correction) of the value counts per
  categorical one, drifted at p < 0.05 (no correction across columns);
- **Evidently** (``.bench-venvs/evidently``, ``pandas<3``): its
  ``DataDriftPreset`` on the two pandas frames, with its default tests and
  thresholds. About eight minutes and 8 GiB at full size, so it runs once.

Recorded per tool: which planted shifts it found, its false alarms among
the 80 unchanged columns, and whether it declared dataset drift. Conveyor's
statistics and p-values are compared with the scipy side's, column by
column on the same data. Results go to ``results/drift.json``.
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
from peers.drift_workload import (
    CHUNK_ROWS,
    FULL_ROWS,
    GENERATOR_VERSION,
    PLAN,
    PLANTED,
    QUICK_ROWS,
    SEED,
    SUBTLE,
    Column,
)
from rich.table import Table

# This benchmark's peer; registered with the shared harness, which installs it.
# Evidently does not import with pandas 3.
PEER_PACKAGES = {"evidently": ("evidently", "pandas<3")}
harness.PEERS.update(PEER_PACKAGES)
PEERS = tuple(PEER_PACKAGES)

Log = Callable[[str], None]
GIB = 1 << 30

#: tool -> (label, script, virtualenv peer or None for Conveyor's, runs at most)
SIDES: dict[str, tuple[str, str, str | None, int | None]] = {
    "conveyor": ("Conveyor DriftDetector", "conveyor_drift.py", None, None),
    "scipy": ("scipy per column (pandas)", "scipy_drift.py", None, None),
    "evidently": ("Evidently DataDriftPreset", "evidently_drift.py", "evidently", 1),
}


# -- the data -----------------------------------------------------------------------


def data_files(rows: int, log: Log = print) -> tuple[Path, Path]:
    """The seeded reference and current Parquet files, generated once and cached."""
    folder = Path(tempfile.gettempdir()) / "conveyor-bench"
    folder.mkdir(exist_ok=True)
    stem = f"drift-v{GENERATOR_VERSION}-{rows}-{SEED}"
    paths = folder / f"{stem}-reference.parquet", folder / f"{stem}-current.parquet"
    for frame, path in enumerate(paths):
        if not path.exists():
            log(f"drift: writing {rows:,} rows x {len(PLAN)} columns to {path}")
            partial = path.with_suffix(".partial")
            _generate(partial, rows, current=frame == 1)
            partial.rename(path)
    return paths


def _generate(path: Path, rows: int, *, current: bool) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
            size = min(CHUNK_ROWS, rows - start)
            rng = np.random.default_rng([SEED, int(current), chunk])
            table = pa.table({c.name: _draw(rng, c, size, current) for c in PLAN})
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _draw(rng: Any, column: Column, n: int, current: bool) -> Any:
    import numpy as np
    import pyarrow as pa

    spec = column.shifted if current and column.shifted is not None else column.base
    dist = spec["dist"]
    if dist == "categorical":
        probs = np.asarray(spec["probs"], dtype=np.float64)
        codes = rng.choice(probs.size, size=n, p=probs / probs.sum())
        labels = pa.array([f"{column.name}_v{k:02d}" for k in range(probs.size)])
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), labels).cast(
            pa.string()
        )
    if dist == "bool":
        return pa.array(rng.random(n) < spec["p"])
    if dist == "normal":
        x = rng.normal(spec["loc"], spec["scale"], n)
        if "zeros" in spec:
            x[rng.random(n) < spec["zeros"]] = 0.0
    elif dist == "exponential":
        x = rng.exponential(spec["scale"], n)
        if "outliers" in spec:
            hit = rng.random(n) < spec["outliers"]
            x[hit] *= spec["factor"]
    elif dist == "uniform":
        x = rng.uniform(spec["low"], spec["high"], n)
    elif dist == "poisson":
        return pa.array(rng.poisson(spec["lam"], n).astype(np.int64))
    elif dist == "ages":
        return pa.array(rng.integers(18, 91, n).astype(np.int64))
    elif dist == "lognormal":
        x = rng.lognormal(0.0, spec["sigma"], n)
    elif dist == "gamma":
        x = rng.gamma(spec["shape"], spec["scale"], n)
    elif dist == "student_t":
        x = rng.standard_t(spec["df"], n)
    elif dist == "mixture":
        x = rng.normal(0.0, 1.0, n) + 4.0 * (rng.random(n) < spec["weight"])
    else:
        raise ValueError(f"unknown distribution {dist!r}")
    return pa.array(x)


# -- measuring one process ----------------------------------------------------------------


def measure(python: Path, script: str, args: list[str], *, label: str, log: Log) -> dict[str, Any]:
    """Run one side as a whole process (see harness.measure_process) and log it."""
    result = harness.measure_process(python, script, args, label=label)
    wall = result["wall_seconds"]
    found = sorted(set(result["drifted"]) & set(PLANTED))
    log(
        f"drift: {label}: {wall:.1f} s (cpu {result['cpu_seconds']:.1f} s), "
        f"peak {result['peak_rss_bytes'] / GIB:.2f} GiB, "
        f"{len(found)}/{len(PLANTED)} planted shifts found, "
        f"{len(set(result['drifted']) - set(PLANTED))} false alarms"
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
    """Measure every tool; write and return ``results/drift.json``.

    Rounds alternate the order of the tools so a burst of someone else's
    work on the shared machine lands on all of them alike; Evidently runs
    once.
    """
    rows = QUICK_ROWS if quick else FULL_ROWS
    rounds = rounds or (1 if quick else 3)
    reference, current = data_files(rows, log)
    for path in (reference, current):
        path.read_bytes()  # into the page cache, so no tool pays the first read from disk
    interpreters = {"conveyor": Path(sys.executable), **pythons}
    raw: dict[str, list[dict[str, Any]]] = {tool: [] for tool in SIDES}
    for r in range(rounds):
        order = list(SIDES) if r % 2 == 0 else list(SIDES)[::-1]
        for tool in order:
            label, script, peer, at_most = SIDES[tool]
            if at_most is not None and len(raw[tool]) >= at_most:
                continue
            log(f"drift: round {r + 1}/{rounds}, {label}")
            args = [str(reference), str(current)]
            raw[tool].append(
                measure(interpreters[peer or "conveyor"], script, args, label=label, log=log)
            )
    result = _report(raw, rows, (reference, current), quick)
    result["path"] = str(harness.write_result("drift", result).relative_to(harness.ROOT))
    return result


# -- the report ---------------------------------------------------------------------------


def _report(
    raw: dict[str, list[dict[str, Any]]], rows: int, paths: tuple[Path, Path], quick: bool
) -> dict[str, Any]:
    tools: dict[str, Any] = {}
    for tool, runs in raw.items():
        first = runs[0]
        drifted = set(first["drifted"])
        # The phases of the run whose wall time is the median (the one reported).
        typical = sorted(runs, key=lambda r: r["wall_seconds"])[(len(runs) - 1) // 2]
        walls = [r["wall_seconds"] for r in runs]
        cpus = [r["cpu_seconds"] for r in runs]
        peaks = [r["peak_rss_bytes"] for r in runs]
        tools[tool] = {
            "label": SIDES[tool][0],
            "versions": first["versions"],
            "wall_seconds": walls,
            "wall_seconds_median": statistics.median(walls),
            "cpu_seconds": cpus,
            "cpu_seconds_median": statistics.median(cpus),
            "peak_rss_bytes": peaks,
            "peak_rss_gib_median": statistics.median(peaks) / GIB,
            "phases_median_run": typical["phases"],
            "rounds": len(runs),
            "dataset_drift": first["dataset_drift"],
            "planted_found": sorted(drifted & set(PLANTED)),
            "planted_missed": sorted(set(PLANTED) - drifted),
            "subtle_found": sorted(drifted & set(SUBTLE)),
            "false_alarms": sorted(drifted - set(PLANTED)),
            "tests": first.get("tests", {}),
        }
    scipy_wall = tools["scipy"]["wall_seconds_median"]
    for entry in tools.values():
        entry["vs_scipy"] = entry["wall_seconds_median"] / scipy_wall
    conveyor = tools["conveyor"]
    evidently = tools["evidently"]
    return {
        "benchmark": "drift",
        "timestamp": harness.timestamp(),
        "quick": quick,
        "rows_per_frame": rows,
        "columns": len(PLAN),
        "data_file_bytes": [p.stat().st_size for p in paths],
        "machine": harness.machine(),
        "planted": {
            c.name: {"kind": c.kind, "what": c.what, "subtle": c.subtle, **c.expected}
            for c in PLAN
            if c.planted
        },
        "tools": tools,
        "agreement_with_scipy": _agreement(raw["conveyor"][0], raw["scipy"][0]),
        "columns_detail": {
            name: {
                tool: raw[tool][0]["columns"].get(name)
                for tool in raw
                if raw[tool][0].get("columns")
            }
            for name in PLANTED
        },
        "targets": {
            "conveyor_seconds": conveyor["wall_seconds_median"],
            "at_most_10_s": conveyor["wall_seconds_median"] <= 10.0,
            "conveyor_peak_gib": conveyor["peak_rss_gib_median"],
            "under_1_gib": conveyor["peak_rss_gib_median"] < 1.0,
            "every_planted_shift_found": not conveyor["planted_missed"],
            "conveyor_vs_evidently_speedup": evidently["wall_seconds_median"]
            / conveyor["wall_seconds_median"],
        },
    }


def _agreement(conveyor: dict[str, Any], scipy: dict[str, Any]) -> dict[str, Any]:
    """Largest differences of Conveyor's statistics and p-values from scipy's, same columns.

    The z-test of a binary column is compared as z**2 against the 2 x 2
    chi-squared statistic (they are equal), its p-value directly.
    """
    worst = {"statistic": 0.0, "p_value": 0.0}
    compared = 0
    where: dict[str, str] = {}
    for name, ours in conveyor["columns"].items():
        theirs = scipy["columns"].get(name)
        if theirs is None or ours.get("statistic") is None or ours.get("p_value") is None:
            continue
        stat = ours["statistic"] ** 2 if ours["test"] == "z" else ours["statistic"]
        if ours["test"] in ("ks", "chisquare", "z"):
            compared += 1
            for key, mine in (("statistic", stat), ("p_value", ours["p_value"])):
                # Relative for chi-squared statistics (they grow with the rows), absolute otherwise.
                scale = max(1.0, abs(theirs[key])) if key == "statistic" else 1.0
                diff = abs(mine - theirs[key]) / scale
                if diff > worst[key]:
                    worst[key], where[key] = diff, name
    return {
        "columns_compared": compared,
        "max_statistic_difference": worst["statistic"],
        "max_p_value_difference": worst["p_value"],
        "where": where,
        "within_1e-9": worst["statistic"] <= 1e-9 and worst["p_value"] <= 1e-9,
    }


def summary(result: dict[str, Any]) -> Table:
    rows, cols = result["rows_per_frame"], result["columns"]
    table = Table(
        title=f"drift: {rows:,} rows x {cols} columns per frame, {len(result['planted'])} "
        f"planted shifts ({'quick' if result['quick'] else 'full'} size)",
        title_justify="left",
    )
    for header in (
        "tool",
        "wall s",
        "vs scipy",
        "peak GiB",
        "planted found",
        "subtle found",
        "false alarms",
        "dataset drift",
        "missed",
    ):
        table.add_column(header, justify="left" if header in ("tool", "missed") else "right")
    n_subtle = len(SUBTLE)
    for entry in result["tools"].values():
        table.add_row(
            entry["label"],
            f"{entry['wall_seconds_median']:.1f}",
            f"{entry['vs_scipy']:.2f}x",
            f"{entry['peak_rss_gib_median']:.2f}",
            f"{len(entry['planted_found'])}/{len(PLANTED)}",
            f"{len(entry['subtle_found'])}/{n_subtle}",
            str(len(entry["false_alarms"])),
            "yes" if entry["dataset_drift"] else "no",
            ", ".join(entry["planted_missed"]) or "-",
        )
    agreement = result["agreement_with_scipy"]
    table.caption = (
        f"Conveyor vs scipy on {agreement['columns_compared']} columns: max statistic "
        f"difference {agreement['max_statistic_difference']:.1e}, max p-value difference "
        f"{agreement['max_p_value_difference']:.1e}"
    )
    return table


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    pythons = {peer: harness.ensure_venv(peer) for peer in PEERS}
    outcome = run(quick=quick, pythons=pythons)
    print(json.dumps(outcome["targets"], indent=2))
