"""Great Expectations' side of the validation benchmark (``.bench-venvs/great_expectations``).

GX 1.x with an ephemeral context: the file is read into pandas (pyarrow
engine) and validated as a whole-dataframe batch against a suite of the same
50 expectations. Each result carries its expectation's name in ``meta``.
GX's schema check is ``ExpectTableColumnsToMatchSet`` (names only; the types
come from the Parquet file).
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


def build_suite(gx: Any, gxe: Any, pd: Any) -> Any:
    suite = gx.ExpectationSuite(name="transactions")
    for e in EXPECTATIONS:
        kind, column, meta = e["kind"], e.get("column"), {"name": name_of(e)}
        if kind == "schema":
            x = gxe.ExpectTableColumnsToMatchSet(
                column_set=list(COLUMNS), exact_match=True, meta=meta
            )
        elif kind == "row_count":
            x = gxe.ExpectTableRowCountToBeBetween(
                min_value=e["min"], max_value=e["max"], meta=meta
            )
        elif kind == "freshness":
            limit = pd.Timestamp(NOW) - pd.Timedelta("1h")
            x = gxe.ExpectColumnMaxToBeBetween(column=column, min_value=limit, meta=meta)
        elif kind == "not_null":
            x = gxe.ExpectColumnValuesToNotBeNull(column=column, meta=meta)
        elif kind == "between":
            x = gxe.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=_bound(e.get("min"), pd),
                max_value=_bound(e.get("max"), pd),
                strict_min=bool(e.get("strict_min")),
                meta=meta,
            )
        elif kind == "in_set":
            x = gxe.ExpectColumnValuesToBeInSet(column=column, value_set=e["values"], meta=meta)
        elif kind == "matches_regex":
            x = gxe.ExpectColumnValuesToMatchRegex(column=column, regex=e["pattern"], meta=meta)
        elif kind == "unique":
            x = gxe.ExpectColumnValuesToBeUnique(column=column, meta=meta)
        else:
            raise ValueError(kind)
        suite.add_expectation(x)
    return suite


def _bound(value: Any, pd: Any) -> Any:
    return pd.Timestamp(value) if isinstance(value, str) else value


def main() -> None:
    path, _ = parse_args(sys.argv)
    phases = Phases()
    with phases("import"):
        import great_expectations as gx
        import great_expectations.expectations as gxe
        import pandas as pd
    with phases("read"):
        frame = pd.read_parquet(path, engine="pyarrow")
    with phases("validate"):
        context = gx.get_context(mode="ephemeral")
        asset = context.data_sources.add_pandas("bench").add_dataframe_asset("transactions")
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame}
        )
        outcome = batch.validate(build_suite(gx, gxe, pd), result_format="BASIC")
    failed, counts = [], {}
    for r in outcome.results:
        name = r.expectation_config.meta["name"]
        if r.exception_info and r.exception_info.get("raised_exception"):
            failed.append(name)
            counts[name] = f"raised: {r.exception_info.get('exception_message')}"
            continue
        if not r.success:
            failed.append(name)
        unexpected = r.result.get("unexpected_count")
        if unexpected is not None:
            counts[name] = int(unexpected)
    emit(
        {
            "tool": "great_expectations",
            "rows": len(frame),
            "failed": sorted(failed),
            "counts": counts,
            "phases": phases.seconds,
            "internal_seconds": time.perf_counter() - START,
            "versions": {"great_expectations": gx.__version__, "pandas": pd.__version__},
        }
    )


if __name__ == "__main__":
    main()
