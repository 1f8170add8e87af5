"""pandera's side of the validation benchmark (runs in ``.bench-venvs/pandera``).

The file is read into pandas (pyarrow engine, as a user would) and checked
with one ``DataFrameSchema`` holding the same 50 expectations, validated
lazily so every failure is collected. Each failure case is mapped back to
the expectation it came from to compare with the other tools.
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

from typing import Any  # noqa: E402

from validation_workload import (  # noqa: E402
    COLUMNS,
    EXPECTATIONS,
    NOW,
    Phases,
    emit,
    name_of,
    parse_args,
)

PANDAS_TYPES = {
    "int64": "int64",
    "int32": "int32",
    "double": "float64",
    "string": "str",
    "bool": "bool",
    "timestamp[us, tz=UTC]": "datetime64[us, UTC]",
}


def build_schema(pa: Any, pd: Any) -> tuple[Any, dict[tuple[str, int], str]]:
    """The DataFrameSchema, and (column, check number) -> expectation name."""
    checks: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    names: dict[tuple[str, int], str] = {}
    not_null: set[str] = set()
    unique: set[str] = set()
    frame_checks = []
    for e in EXPECTATIONS:
        kind, column, name = e["kind"], e.get("column"), name_of(e)
        if kind == "not_null":
            not_null.add(column)
        elif kind == "unique":
            unique.add(column)
        elif kind == "between":
            low = _bound(e.get("min"), pd)
            high = _bound(e.get("max"), pd)
            if low is not None and high is not None:
                check = pa.Check.in_range(
                    low, high, include_min=not e.get("strict_min"), include_max=True
                )
            elif low is not None:
                check = pa.Check.gt(low) if e.get("strict_min") else pa.Check.ge(low)
            else:
                check = pa.Check.le(high)
            names[(column, len(checks[column]))] = name
            checks[column].append(check)
        elif kind == "in_set":
            names[(column, len(checks[column]))] = name
            checks[column].append(pa.Check.isin(e["values"]))
        elif kind == "matches_regex":
            names[(column, len(checks[column]))] = name
            checks[column].append(pa.Check.str_matches(e["pattern"]))
        elif kind == "row_count":
            low, high = e["min"], e["max"]
            frame_checks.append(pa.Check(lambda df, a=low, b=high: a <= len(df) <= b, name=name))
        elif kind == "freshness":
            limit = pd.Timestamp(NOW) - pd.Timedelta("1h")
            frame_checks.append(pa.Check(lambda df, c=column, t=limit: df[c].max() >= t, name=name))
        # "schema" is pandera's own work: dtypes per column and strict=True.
    columns = {
        column: pa.Column(
            PANDAS_TYPES[arrow_type],
            checks[column],
            nullable=column not in not_null,
            unique=column in unique,
        )
        for column, arrow_type in COLUMNS.items()
    }
    return pa.DataFrameSchema(columns, checks=frame_checks, strict=True), names


def _bound(value: Any, pd: Any) -> Any:
    return pd.Timestamp(value) if isinstance(value, str) else value


def expectation_of(row: Any, names: dict[tuple[str, int], str]) -> str:
    check = str(row["check"])
    column = row["column"]
    if check == "not_nullable":
        return f"{column}.not_null"
    if check == "field_uniqueness":
        return f"{column}.unique"
    if check.startswith("dtype(") or check.startswith("column_in_"):
        return "schema"
    if row["schema_context"] == "DataFrameSchema":
        return check
    return names.get((column, int(row["check_number"])), f"?{column}:{check}")


def main() -> None:
    path, _ = parse_args(sys.argv)
    phases = Phases()
    with phases("import"):
        import pandas as pd
        import pandera
        import pandera.pandas as pa
    with phases("read"):
        frame = pd.read_parquet(path, engine="pyarrow")
    with phases("validate"):
        schema, names = build_schema(pa, pd)
        counts: dict[str, int] = {}
        try:
            schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as errors:
            cases = errors.failure_cases
            for _, row in _grouped(cases):
                name = expectation_of(row, names)
                counts[name] = counts.get(name, 0) + int(row.get("n", 1))
    emit(
        {
            "tool": "pandera",
            "rows": len(frame),
            "failed": sorted(counts),
            "counts": {k: v for k, v in counts.items() if "." in k},
            "phases": phases.seconds,
            "internal_seconds": time.perf_counter() - START,
            "versions": {"pandera": pandera.__version__, "pandas": pd.__version__},
        }
    )


def _grouped(cases: Any) -> Any:
    """Failure cases counted per check (there may be many thousands of rows)."""
    keys = ["schema_context", "column", "check", "check_number"]
    grouped = cases.groupby(keys, dropna=False).size().reset_index(name="n")
    return grouped.iterrows()


if __name__ == "__main__":
    main()
