"""Drift judgment: how often each kind of shift is flagged, before and after the fix.

Seeded simulations by shift family, each case run over many seeds through
the real detector (fit and score of a one-column table; the report case,
of a 20-column one):

- **proportions**: a boolean column at base rates from 0.1% to 50%, unchanged,
  moved by a relative amount, or moved right at the floor;
- **categorical**: a 50-level Zipf column at 5,000 and 500,000 rows, with no
  drift and with shifts of a quarter to six times the floor of Cramér's V;
- **numeric**: a heavy-tailed (lognormal) column whose mean moves 0-20%, and
  a normal one moving 0.1 standard deviation;
- **missing**: the null rate of a numeric column moving (values unchanged);
- **report**: 20 mixed columns of identical data, every one marked important
  (so one column alarm fails the report): the false-alarm rate of the report.

"Before" is the detector as it was at ``--before`` (default: the commit before
the fix), extracted from git into a temporary package and run on the same
draws; "after" is the working tree's. Recorded per case and side: the share of
runs flagged as drift, the share significant after the Benjamini-Hochberg
correction, and (after) the share judged "significant, below the floor".

    python benchmarks/drift_judgment.py                 # 200 seeds a case (100 at 500k+ rows)
    python benchmarks/drift_judgment.py --seeds 20      # a quick look
    python benchmarks/drift_judgment.py --before HEAD~3

Writes ``results/drift_judgment.json`` and prints the table that
``docs/data.md`` quotes. Counted columns are drawn as counts and laid out as
rows (the tests do not depend on row order), numeric ones a block of runs at a
time; runs in one process (a few minutes for the full size on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

#: No peer: both sides are Conveyor (before and after).
PEERS: tuple[str, ...] = ()

#: The detector before the judgment fix (issue 13, item 4).
BEFORE = "b72f46a"
ALPHA = 0.05

LEVELS = pa.array([f"level{k:02d}" for k in range(50)])
ZIPF = 1.0 / np.arange(1, 51)
ZIPF /= ZIPF.sum()

Draw = Callable[[np.random.Generator, int], Iterator[tuple[pa.Table, pa.Table]]]


@dataclass(frozen=True, slots=True)
class Case:
    family: str
    name: str
    rows: int
    draw: Draw
    expect: str  # what a good judgment does: "quiet", "flag", or "below floor"
    seeds_cap: int | None = None  # fewer seeds for the largest cases
    important: bool = False  # every column marked important (the report case)


# -- the draws ---------------------------------------------------------------------------


def _one(reference: pa.Array, current: pa.Array) -> tuple[pa.Table, pa.Table]:
    return pa.table({"x": reference}), pa.table({"x": current})


def _odds_times(p: float, factor: float) -> float:
    odds = p / (1 - p) * factor
    return odds / (1 + odds)


def proportions(p_ref: float, p_cur: float, rows: int) -> Draw:
    def draw(rng: np.random.Generator, seeds: int) -> Iterator[tuple[pa.Table, pa.Table]]:
        hits = rng.binomial(rows, [p_ref, p_cur], size=(seeds, 2))
        order = np.arange(rows)
        for a, b in hits.tolist():
            yield _one(pa.array(order < a), pa.array(order < b))

    return draw


def _tilted_zipf(v: float) -> np.ndarray:
    """Zipf probabilities tilted (``p * exp(t * z)``, z linear in the rank) to a Cramér's V of v."""
    if v == 0:
        return ZIPF
    z = np.linspace(-1.0, 1.0, ZIPF.size)

    def v_of(t: float) -> float:
        q = ZIPF * np.exp(t * z)
        q /= q.sum()
        return math.sqrt(float(np.sum((ZIPF - q) ** 2 / (ZIPF + q))) / 2.0)

    low, high = 0.0, 5.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if v_of(mid) < v else (low, mid)
    q = ZIPF * np.exp(low * z)
    return np.asarray(q / q.sum())


def zipf(v: float, rows: int) -> Draw:
    moved = _tilted_zipf(v)
    levels = np.arange(50, dtype=np.int32)

    def column(counts: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(np.repeat(levels, counts)), LEVELS)

    def draw(rng: np.random.Generator, seeds: int) -> Iterator[tuple[pa.Table, pa.Table]]:
        reference = rng.multinomial(rows, ZIPF, size=seeds)
        current = rng.multinomial(rows, moved, size=seeds)
        for a, b in zip(reference, current, strict=True):
            yield _one(column(a), column(b))

    return draw


def lognormal(scale: float, rows: int, block: int = 20) -> Draw:
    def draw(rng: np.random.Generator, seeds: int) -> Iterator[tuple[pa.Table, pa.Table]]:
        for start in range(0, seeds, block):
            size = min(block, seeds - start)
            reference = rng.lognormal(0.0, 1.0, size=(size, rows))
            current = rng.lognormal(0.0, 1.0, size=(size, rows)) * scale
            for a, b in zip(reference, current, strict=True):
                yield _one(pa.array(a), pa.array(b))

    return draw


def normal(shift: float, rows: int, block: int = 20) -> Draw:
    def draw(rng: np.random.Generator, seeds: int) -> Iterator[tuple[pa.Table, pa.Table]]:
        for start in range(0, seeds, block):
            size = min(block, seeds - start)
            reference = rng.normal(size=(size, rows))
            current = rng.normal(loc=shift, size=(size, rows))
            for a, b in zip(reference, current, strict=True):
                yield _one(pa.array(a), pa.array(b))

    return draw


def nulls(rate_ref: float, rate_cur: float, rows: int) -> Draw:
    def draw(rng: np.random.Generator, seeds: int) -> Iterator[tuple[pa.Table, pa.Table]]:
        order = np.arange(rows)
        counts = rng.binomial(rows, [rate_ref, rate_cur], size=(seeds, 2))
        for a, b in counts.tolist():
            values = rng.normal(size=(2, rows))
            yield _one(pa.array(values[0], mask=order < a), pa.array(values[1], mask=order < b))

    return draw


def _categorical(probs: list[float]) -> Callable[[np.random.Generator, int], np.ndarray]:
    p = np.asarray(probs) / np.sum(probs)
    return lambda rng, n: rng.choice(p.size, size=n, p=p).astype(np.int32)


#: The 20 mixed columns of tests/data/drift/test_drift_judgment.py.
_MIXED: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.normal(size=n),
    "exponential": lambda rng, n: rng.exponential(size=n),
    "lognormal": lambda rng, n: rng.lognormal(sigma=1.0, size=n),
    "uniform": lambda rng, n: rng.uniform(-3, 3, size=n),
    "student_t": lambda rng, n: rng.standard_t(3, size=n),
    "poisson": lambda rng, n: rng.poisson(3.0, size=n).astype(np.float64),
    "ages": lambda rng, n: rng.integers(18, 90, size=n).astype(np.float64),
    "bimodal": lambda rng, n: rng.normal(size=n) + 4 * (rng.random(n) < 0.3),
    "level": lambda rng, n: rng.integers(0, 4, size=n).astype(np.float64),
    "binary": lambda rng, n: (rng.random(n) < 0.2).astype(np.float64),
    "uniform3": _categorical([1, 1, 1]),
    "skewed5": _categorical([50, 25, 15, 7, 3]),
    "rare": _categorical([90, 5, 3, 1, 0.5, 0.5]),
    "twelve": _categorical([1] * 12),
    "zipf8": _categorical([1 / k for k in range(1, 9)]),
    "pair": _categorical([70, 30]),
    "balanced_pair": _categorical([50, 50]),
    "four": _categorical([40, 30, 20, 10]),
    "six": _categorical([5, 4, 3, 3, 2, 1]),
    "seven": _categorical([30, 20, 15, 15, 10, 5, 5]),
}
_WORDS = pa.array([f"w{i:02d}" for i in range(12)])


def mixed(n_ref: int, n_cur: int) -> Draw:
    def frame(rng: np.random.Generator, n: int) -> pa.Table:
        columns: dict[str, pa.Array] = {}
        for name, make in _MIXED.items():
            values = make(rng, n)
            if values.dtype == np.int32:
                columns[name] = pa.DictionaryArray.from_arrays(pa.array(values), _WORDS)
            else:
                columns[name] = pa.array(values)
        return pa.table(columns)

    def draw(rng: np.random.Generator, seeds: int) -> Iterator[tuple[pa.Table, pa.Table]]:
        for _ in range(seeds):
            yield frame(rng, n_ref), frame(rng, n_cur)

    return draw


def cases() -> list[Case]:
    at_floor = _odds_times(0.10, math.exp(0.04))
    return [
        Case("proportions", "10% unchanged", 50_000, proportions(0.10, 0.10, 50_000), "quiet"),
        Case("proportions", "1% unchanged", 50_000, proportions(0.01, 0.01, 50_000), "quiet"),
        Case("proportions", "50% unchanged", 50_000, proportions(0.5, 0.5, 50_000), "quiet"),
        Case("proportions", "10% -> 11%", 50_000, proportions(0.10, 0.11, 50_000), "flag"),
        Case("proportions", "1% -> 1.5%", 50_000, proportions(0.01, 0.015, 50_000), "flag"),
        Case("proportions", "0.1% -> 0.15%", 500_000, proportions(0.001, 0.0015, 500_000), "flag"),
        Case("proportions", "30% -> 33%", 50_000, proportions(0.30, 0.33, 50_000), "flag"),
        Case("proportions", "50% -> 52%", 50_000, proportions(0.50, 0.52, 50_000), "flag"),
        Case(
            "proportions",
            "10%, odds x1.02 (half the floor)",
            1_000_000,
            proportions(0.10, _odds_times(0.10, math.exp(0.02)), 1_000_000),
            "below floor",
            seeds_cap=100,
        ),
        Case(
            "proportions",
            "10%, odds x e^0.04 (at the floor)",
            1_000_000,
            proportions(0.10, at_floor, 1_000_000),
            "below floor",
            seeds_cap=100,
        ),
        Case("categorical", "Zipf-50, no drift", 5_000, zipf(0.0, 5_000), "quiet"),
        Case("categorical", "Zipf-50, V 0.05 (2x floor)", 5_000, zipf(0.05, 5_000), "flag"),
        Case("categorical", "Zipf-50, V 0.15 (6x floor)", 5_000, zipf(0.15, 5_000), "flag"),
        Case("categorical", "Zipf-50, no drift", 50_000, zipf(0.0, 50_000), "quiet"),
        Case(
            "categorical",
            "Zipf-50, V 0.0125 (half floor)",
            50_000,
            zipf(0.0125, 50_000),
            "below floor",
        ),
        Case("categorical", "Zipf-50, V 0.05 (2x floor)", 50_000, zipf(0.05, 50_000), "flag"),
        Case("categorical", "Zipf-50, no drift", 500_000, zipf(0.0, 500_000), "quiet", 100),
        Case(
            "categorical",
            "Zipf-50, V 0.0125 (half floor)",
            500_000,
            zipf(0.0125, 500_000),
            "below floor",
            100,
        ),
        Case(
            "categorical",
            "Zipf-50, V 0.025 (at the floor)",
            500_000,
            zipf(0.025, 500_000),
            "below floor",
            100,
        ),
        Case(
            "categorical", "Zipf-50, V 0.05 (2x floor)", 500_000, zipf(0.05, 500_000), "flag", 100
        ),
        Case("numeric", "lognormal unchanged", 50_000, lognormal(1.0, 50_000), "quiet"),
        Case("numeric", "lognormal mean +2%", 50_000, lognormal(1.02, 50_000), "below floor"),
        Case(
            "numeric",
            "lognormal mean +5% (D 0.0195)",
            50_000,
            lognormal(1.05, 50_000),
            "below floor",
        ),
        Case("numeric", "lognormal mean +10% (D 0.038)", 50_000, lognormal(1.10, 50_000), "flag"),
        Case("numeric", "lognormal mean +10% (D 0.038)", 5_000, lognormal(1.10, 5_000), "flag"),
        Case("numeric", "lognormal mean +20% (D 0.073)", 5_000, lognormal(1.20, 5_000), "flag"),
        Case("numeric", "normal +0.1 sd (D 0.04)", 50_000, normal(0.1, 50_000), "flag"),
        Case("missing", "no nulls", 50_000, nulls(0.0, 0.0, 50_000), "quiet"),
        Case("missing", "2% unchanged", 50_000, nulls(0.02, 0.02, 50_000), "quiet"),
        Case("missing", "0% -> 0.1%", 50_000, nulls(0.0, 0.001, 50_000), "flag"),
        Case("missing", "0% -> 1%", 50_000, nulls(0.0, 0.01, 50_000), "flag"),
        Case("missing", "5% -> 6%", 50_000, nulls(0.05, 0.06, 50_000), "flag"),
        Case("missing", "5% -> 5.05%", 50_000, nulls(0.05, 0.0505, 50_000), "below floor"),
        Case(
            "report",
            "20 mixed columns, identical, all important",
            3_000,
            mixed(3_000, 2_000),
            "quiet",
            important=True,
        ),
    ]


# -- the two detectors -----------------------------------------------------------------


def load_before(revision: str, folder: Path) -> Any:
    """The drift package as it was at ``revision``, importable as ``drift_before``."""
    listing = subprocess.run(
        [
            "git",
            "-C",
            str(harness.ROOT),
            "ls-tree",
            "--name-only",
            revision,
            "src/conveyor/data/drift/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    package = folder / "drift_before"
    package.mkdir(parents=True, exist_ok=True)
    for path in listing:
        if not path.endswith(".py"):
            continue
        text = subprocess.run(
            ["git", "-C", str(harness.ROOT), "show", f"{revision}:{path}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (package / Path(path).name).write_text(text.replace("conveyor.data.drift", "drift_before"))
    sys.path.insert(0, str(folder))
    return importlib.import_module("drift_before")


def _judge(
    detector_class: Any, reference: pa.Table, current: pa.Table, important: bool
) -> dict[str, Any]:
    """One run of one side: was anything flagged, significant, below the floor?"""
    params: dict[str, Any] = {"n_jobs": 1}
    result = detector_class(**params).fit(reference).score(current)
    columns = list(result.columns.values())
    flagged = any(c.drifted for c in columns)
    significant = any(
        (c.p_value_adjusted is not None and c.p_value_adjusted < ALPHA)
        or getattr(c, "missing_rate_changed", False)
        for c in columns
    )
    below = any(getattr(c, "judgment", None) == "significant_below_floor" for c in columns)
    warned_missing = any(getattr(c, "missing_rate_changed", False) for c in columns)
    return {
        "flagged": flagged if important or len(columns) == 1 else result.dataset_drift,
        "dataset_drift": bool(result.dataset_drift),
        "significant": significant,
        "below_floor": below and not flagged,
        "missing_rate_changed": warned_missing,
    }


def run_case(case: Case, seeds: int, before: Any, after: Any, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = min(seeds, case.seeds_cap) if case.seeds_cap else seeds
    tallies: dict[str, dict[str, int]] = {"before": {}, "after": {}}
    started = time.perf_counter()
    for reference, current in case.draw(rng, n):
        for side, module in (("before", before), ("after", after)):
            outcome = _judge(module.DriftDetector, reference, current, case.important)
            for key, value in outcome.items():
                tallies[side][key] = tallies[side].get(key, 0) + int(value)
    rates = {side: {k: v / n for k, v in t.items()} for side, t in tallies.items()}
    return {
        "family": case.family,
        "case": case.name,
        "rows": case.rows,
        "seeds": n,
        "expect": case.expect,
        "before": rates["before"],
        "after": rates["after"],
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- run, table --------------------------------------------------------------------------


def run(
    *, seeds: int = 200, before: str = BEFORE, log: Callable[[str], None] = print, **_: Any
) -> dict[str, Any]:
    import conveyor.data.drift as after

    with tempfile.TemporaryDirectory(prefix="drift-judgment-") as folder:
        old = load_before(before, Path(folder))
        results = []
        for index, case in enumerate(cases()):
            entry = run_case(case, seeds, old, after, seed=20_241_300 + index)
            log(
                f"drift_judgment: {case.family} / {case.name} @ {case.rows:,}: flagged "
                f"{entry['before']['flagged']:.0%} -> {entry['after']['flagged']:.0%} "
                f"({entry['seeds']} seeds, {entry['seconds']} s)"
            )
            results.append(entry)
    result = {
        "benchmark": "drift_judgment",
        "timestamp": harness.timestamp(),
        "machine": harness.machine(),
        "before": before,
        "alpha": ALPHA,
        "floors_after": dict(after.DEFAULT_EFFECT_SIZE_FLOORS),
        "seeds": seeds,
        "cases": results,
    }
    result["path"] = str(harness.write_result("drift_judgment", result).relative_to(harness.ROOT))
    return result


def summary(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"drift judgment: share of runs flagged, before ({result['before']}) and after",
        title_justify="left",
    )
    for header in (
        "family",
        "case",
        "rows",
        "seeds",
        "want",
        "before",
        "after",
        "after: below floor",
        "significant",
    ):
        table.add_column(
            header, justify="left" if header in ("family", "case", "want") else "right"
        )
    for entry in result["cases"]:
        table.add_row(
            entry["family"],
            entry["case"],
            f"{entry['rows']:,}",
            str(entry["seeds"]),
            entry["expect"],
            f"{entry['before']['flagged']:.1%}",
            f"{entry['after']['flagged']:.1%}",
            f"{entry['after']['below_floor']:.1%}",
            f"{entry['after']['significant']:.1%}",
        )
    return table


def markdown(result: dict[str, Any]) -> str:
    """The table as docs/data.md shows it."""
    lines = [
        "| family | case | rows a side | want | flagged before | flagged after "
        "| after: significant, below floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in result["cases"]:
        lines.append(
            f"| {e['family']} | {e['case']} | {e['rows']:,} | {e['expect']} | "
            f"{e['before']['flagged']:.1%} | {e['after']['flagged']:.1%} | "
            f"{e['after']['below_floor']:.1%} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, default=200, help="runs per case (100 at most for the largest)"
    )
    parser.add_argument("--before", default=BEFORE, help="the git revision of the detector before")
    args = parser.parse_args()
    outcome = run(seeds=args.seeds, before=args.before)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(summary(outcome))
    print(markdown(outcome))
