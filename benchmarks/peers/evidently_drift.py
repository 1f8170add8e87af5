"""Evidently's side of the drift benchmark (runs in ``.bench-venvs/evidently``).

``python evidently_drift.py <reference.parquet> <current.parquet>``: read
both frames with pandas, run ``Report([DataDriftPreset()])`` with every
default (its per-column test choice and thresholds, dataset drift at a
drifted share of 0.5), and print which columns it found drifted with each
column's method and score.
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

from drift_workload import Phases, plain  # noqa: E402
from workload import emit_result  # noqa: E402


def main() -> None:
    phases = Phases()
    with phases("import"):
        import pandas as pd
        from evidently import Report
        from evidently.presets import DataDriftPreset
    with phases("read"):
        reference = pd.read_parquet(sys.argv[1])
        current = pd.read_parquet(sys.argv[2])
    with phases("report"):
        snapshot = Report([DataDriftPreset()]).run(current, reference)
    with phases("result"):
        metrics = snapshot.dict()["metrics"]
    columns: dict[str, dict[str, object]] = {}
    share = None
    for metric in metrics:
        config = metric.get("config", {})
        kind = config.get("type", "")
        if kind.endswith("DriftedColumnsCount"):
            share = metric["value"]["share"]
        elif kind.endswith("ValueDrift"):
            method, threshold, value = config["method"], config["threshold"], metric["value"]
            # p-value methods drift below the threshold, distances at or above it.
            drifted = value < threshold if "p_value" in method else value >= threshold
            columns[config["column"]] = {
                "test": method,
                "statistic": plain(value),
                "threshold": threshold,
                "drifted": bool(drifted),
            }
    tests: dict[str, int] = {}
    for col in columns.values():
        tests[str(col["test"])] = tests.get(str(col["test"]), 0) + 1
    emit_result(
        {
            "tool": "evidently",
            "drifted": [name for name, col in columns.items() if col["drifted"]],
            "dataset_drift": share is not None and share >= 0.5,
            "drifted_share": share,
            "tests": tests,
            "columns": columns,
            "phases": phases.seconds,
            "internal_seconds": time.perf_counter() - START,
            "versions": _versions(),
        }
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("evidently", "pandas", "scipy", "numpy")}


if __name__ == "__main__":
    main()
