"""Conveyor's side of the drift benchmark (runs in Conveyor's virtualenv).

``python conveyor_drift.py <reference.parquet> <current.parquet>``: fit a
``DriftDetector`` with its defaults on the reference file, score the current
file, build the check report, and print which columns drifted with each
column's statistic and p-value.
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

from drift_workload import Phases  # noqa: E402
from workload import emit_result  # noqa: E402


def main() -> None:
    reference, current = sys.argv[1], sys.argv[2]
    phases = Phases()
    with phases("import"):
        from conveyor.data.drift import DriftDetector
    with phases("fit"):
        detector = DriftDetector().fit(reference)
    with phases("score"):
        result = detector.score(current)
    with phases("report"):
        report = result.to_report("dataset:bench")
    emit_result(
        {
            "tool": "conveyor",
            "drifted": result.drifted_columns,
            "dataset_drift": result.dataset_drift,
            "verdict": report.verdict,
            "tests": result.tests,
            "columns": {
                name: {
                    "test": col.test,
                    "statistic": col.statistic,
                    "p_value": col.p_value,
                    "p_value_adjusted": col.p_value_adjusted,
                    "effect_size": col.effect_size,
                    "drifted": col.drifted,
                }
                for name, col in result.columns.items()
            },
            "phases": phases.seconds,
            "internal_seconds": time.perf_counter() - START,
            "versions": _versions(),
        }
    )


def _versions() -> dict[str, str]:
    import numpy
    import pyarrow
    import scipy

    from conveyor import __version__

    return {
        "conveyor": __version__,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "scipy": scipy.__version__,
    }


if __name__ == "__main__":
    main()
