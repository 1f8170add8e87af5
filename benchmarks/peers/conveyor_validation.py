"""Conveyor's side of the validation benchmark (runs in Conveyor's virtualenv).

``python conveyor_validation.py <parquet> [{"split": true}]``: validate the
file against the 50 expectations and print what failed, with counts. By
default only the report is computed (``split=False``: DuckDB scans the file,
nothing is loaded); ``split`` also divides the rows into valid and invalid
Arrow tables in memory.
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

from validation_workload import EXPECTATIONS, NOW, Phases, emit, parse_args  # noqa: E402


def main() -> None:
    path, options = parse_args(sys.argv)
    split = bool(options.get("split", False))
    phases = Phases()
    with phases("import"):
        from conveyor.data.validation import parse_expectations, validate
    with phases("validate"):
        expectations = parse_expectations(EXPECTATIONS)
        result = validate(path, expectations, subject="dataset:transactions", now=NOW, split=split)
    counts = {name: rows for name, rows in result.row_failures.items()}
    emit(
        {
            "tool": "conveyor",
            "split": split,
            "rows": result.row_count,
            "failed": sorted(c.name for c in result.report.failures),
            "counts": counts,
            "failed_rows": result.failed_rows,
            "valid_rows": result.valid.num_rows if result.valid is not None else None,
            "invalid_rows": result.invalid.num_rows if result.invalid is not None else None,
            "phases": phases.seconds,
            "internal_seconds": time.perf_counter() - START,
            "versions": _versions(),
        }
    )


def _versions() -> dict[str, str]:
    import duckdb
    import pyarrow

    from conveyor import __version__

    return {"conveyor": __version__, "duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__}


if __name__ == "__main__":
    main()
