"""The plain-scipy side of the drift benchmark: what a user writes by hand.

``python scipy_drift.py <reference.parquet> <current.parquet>``: read both
frames with pandas, then per column ``scipy.stats.ks_2samp`` (numeric) or
``scipy.stats.chi2_contingency`` without Yates' correction on the value
counts (strings and booleans); a column drifted at p < 0.05, with no
correction across columns and no effect size.
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

from drift_workload import Phases, plain  # noqa: E402
from workload import emit_result  # noqa: E402

ALPHA = 0.05


def main() -> None:
    phases = Phases()
    with phases("import"):
        import numpy as np
        import pandas as pd
        from scipy import stats
    with phases("read"):
        reference = pd.read_parquet(sys.argv[1])
        current = pd.read_parquet(sys.argv[2])
    columns: dict[str, dict[str, object]] = {}
    with phases("tests"):
        for name in reference.columns:
            ref, cur = reference[name].dropna(), current[name].dropna()
            if pd.api.types.is_numeric_dtype(ref) and not pd.api.types.is_bool_dtype(ref):
                test = "ks"
                outcome = stats.ks_2samp(ref.to_numpy(), cur.to_numpy())
                statistic, p_value = outcome.statistic, outcome.pvalue
            else:
                test = "chisquare"
                counts = pd.concat([ref.value_counts(), cur.value_counts()], axis=1).fillna(0)
                outcome = stats.chi2_contingency(
                    counts.to_numpy(dtype=np.int64).T, correction=False
                )
                statistic, p_value = outcome.statistic, outcome.pvalue
            columns[name] = {
                "test": test,
                "statistic": plain(statistic),
                "p_value": plain(p_value),
                "drifted": bool(p_value < ALPHA),
            }
    drifted = [name for name, col in columns.items() if col["drifted"]]
    emit_result(
        {
            "tool": "scipy",
            "drifted": drifted,
            "dataset_drift": len(drifted) >= 0.5 * len(columns),
            "tests": {
                t: sum(c["test"] == t for c in columns.values()) for t in ("ks", "chisquare")
            },
            "columns": columns,
            "phases": phases.seconds,
            "internal_seconds": time.perf_counter() - START,
            "versions": {"pandas": pd.__version__, "scipy": __import__("scipy").__version__},
        }
    )


if __name__ == "__main__":
    main()
