"""Each kind of expectation on crafted data: nulls, NaN, empty tables, unicode, time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conveyor.data.validation import (
    REASON_COLUMN,
    Between,
    Custom,
    Freshness,
    InSet,
    MatchesRegex,
    NotNull,
    RowCount,
    Schema,
    Unique,
    ValidationResult,
    validate,
)
from conveyor.errors import ConfigError, InvalidInputError, NotFoundError
from fresh_python import loaded_of

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def run(data: Any, *expectations: Any, **options: Any) -> ValidationResult:
    return validate(data, list(expectations), subject="dataset:test", now=NOW, **options)


def check(result: ValidationResult, name: str) -> Any:
    (found,) = [c for c in result.report.checks if c.name == name]
    return found


def reasons(result: ValidationResult) -> list[str]:
    assert result.invalid is not None
    return result.invalid.column(REASON_COLUMN).to_pylist()


# -- row-level kinds -------------------------------------------------------------------


def test_not_null_counts_nulls_and_nan_but_not_empty_strings() -> None:
    table = pa.table(
        {"x": [1.0, None, float("nan"), 4.0], "s": ["a", "", None, "d"]},
    )
    result = run(table, NotNull(column="x"), NotNull(column="s"))
    x, s = check(result, "x.not_null"), check(result, "s.not_null")
    assert (x.passed, x.observed, x.threshold) == (False, 0.5, 1.0)
    assert x.detail == "2 of 4 rows (50%) are null or NaN"
    assert (s.observed, s.detail) == (0.25, "1 of 4 rows (25%) are null")
    assert result.failed_rows == 2
    assert reasons(result) == ["x.not_null", "x.not_null; s.not_null"]
    assert result.valid is not None and result.valid.column("x").to_pylist() == [1.0, 4.0]


def test_between_is_inclusive_and_skips_missing_values() -> None:
    table = pa.table({"amount": [0.0, 50_000.0, -0.01, 50_000.5, None, float("nan"), 37.0]})
    result = run(table, Between(column="amount", min=0, max=50_000))
    found = check(result, "amount.between")
    assert found.detail == "2 of 7 rows (28.57%) outside [0, 50000]"
    assert found.observed == pytest.approx(2 / 7)
    assert result.invalid is not None
    assert result.invalid.column("amount").to_pylist() == [-0.01, 50_000.5]


def test_between_strict_bounds_and_one_sided() -> None:
    table = pa.table({"n": pa.array([0, 1, 9, 10], pa.int32())})
    strict = run(table, Between(column="n", min=0, max=10, strict_min=True, strict_max=True))
    assert check(strict, "n.between").detail == "2 of 4 rows (50%) outside (0, 10)"
    only_min = run(table, Between(column="n", min=5))
    assert check(only_min, "n.between").detail == "2 of 4 rows (50%) outside [5, +inf)"
    only_max = run(table, Between(column="n", max=0, strict_max=True))
    assert check(only_max, "n.between").detail == "4 of 4 rows (100%) outside (-inf, 0)"


def test_between_on_timestamps_with_time_zones_and_dates() -> None:
    paris = timezone(timedelta(hours=2))
    table = pa.table(
        {
            "ts": pa.array(
                [datetime(2024, 1, 1, 0, 30, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)],
                pa.timestamp("us", tz="Europe/Paris"),
            ),
            "naive": pa.array([datetime(2024, 1, 1), datetime(2023, 12, 31)], pa.timestamp("ns")),
            "day": pa.array([date(2024, 1, 1), date(2025, 1, 1)], pa.date32()),
        }
    )
    # 01:30 at UTC+2 is 23:30 UTC the day before: the first row is inside, in UTC terms.
    result = run(
        table,
        Between(
            column="ts", min=datetime(2024, 1, 1, 1, 30, tzinfo=paris), max="2024-01-01T12:00:00Z"
        ),
        Between(column="naive", min=datetime(2024, 1, 1)),
        Between(column="day", max=date(2024, 12, 31)),
    )
    assert check(result, "ts.between").observed == 0.5
    assert check(result, "naive.between").observed == 0.5
    assert check(result, "day.between").observed == 0.5
    assert reasons(result) == ["ts.between; naive.between; day.between"]
    assert result.valid is not None and result.valid.column("day").to_pylist() == [date(2024, 1, 1)]


def test_in_set_with_unicode_quotes_and_nulls() -> None:
    table = pa.table({"city": ["Zürich", "O'Hare", "東京", None, "zurich", "Zürich "]})
    result = run(table, InSet(column="city", values=["Zürich", "O'Hare", "東京"]))
    assert check(result, "city.in_set").detail == (
        "2 of 6 rows (33.33%) not in {'Zürich', \"O'Hare\", '東京'}"
    )
    assert result.invalid is not None
    assert result.invalid.column("city").to_pylist() == ["zurich", "Zürich "]


def test_in_set_numbers_and_long_sets_are_shortened_in_the_detail() -> None:
    table = pa.table({"code": [1, 2, 3, 99]})
    result = run(table, InSet(column="code", values=list(range(1, 11))))
    assert check(result, "code.in_set").detail == (
        "1 of 4 rows (25%) not in {1, 2, 3, 4, 5, 6, ... (10 values)}"
    )


def test_matches_regex_searches_unless_anchored() -> None:
    table = pa.table({"email": ["ana@example.com", "bad", "jürgen@bücher.de", "x@y", None]})
    search = run(table, MatchesRegex(column="email", pattern="@"))
    assert check(search, "email.matches_regex").observed == 0.2
    anchored = run(table, MatchesRegex(column="email", pattern=r"^[^@\s]+@[^@\s]+\.\w+$"))
    assert check(anchored, "email.matches_regex").detail.startswith("2 of 5 rows (40%)")
    assert anchored.invalid is not None
    assert anchored.invalid.column("email").to_pylist() == ["bad", "x@y"]


def test_regex_duckdb_cannot_run_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"expectations\[0\]\.pattern.*RE2"):
        run(pa.table({"s": ["a"]}), MatchesRegex(column="s", pattern="(?<=a)b"))


def test_unique_marks_every_duplicate_and_ignores_missing_keys() -> None:
    table = pa.table(
        {
            "id": [1, 2, 2, None, None, 3, 3, 3],
            "f": [1.0, float("nan"), float("nan"), None, None, 2.0, 2.5, 2.5],
            "day": ["a", "a", "b", "a", "a", "c", "c", "c"],
        }
    )
    result = run(table, Unique(column="id"), Unique(column="f"), Unique(columns=["id", "day"]))
    assert (
        check(result, "id.unique").detail == "5 of 8 rows (62.5%) share their id with another row"
    )
    assert check(result, "f.unique").observed == 2 / 8  # NaN keys are missing, not duplicates
    assert check(result, "id+day.unique").observed == 3 / 8
    assert reasons(result) == [
        "id.unique",
        "id.unique",
        "id.unique; id+day.unique",
        "id.unique; f.unique; id+day.unique",
        "id.unique; f.unique; id+day.unique",
    ]


def test_mostly_lets_a_fraction_fail_but_the_rows_are_still_split() -> None:
    table = pa.table({"x": list(range(100))})
    tolerant = run(table, Between(column="x", max=97, mostly=0.98))
    found = check(tolerant, "x.between")
    assert found.passed and found.threshold == 0.98
    assert found.detail == "2 of 100 rows (2%) outside (-inf, 97]; at least 98% must pass"
    assert tolerant.report.passed and tolerant.failed_rows == 2
    assert tolerant.invalid is not None and tolerant.invalid.num_rows == 2
    strict = run(table, Between(column="x", max=96, mostly=0.98))
    assert not check(strict, "x.between").passed


def test_a_warning_is_reported_but_splits_no_rows() -> None:
    table = pa.table({"x": [1, None]})
    result = run(table, NotNull(column="x", severity="warning"))
    assert check(result, "x.not_null").status == "warn"
    assert result.report.verdict == "passed with warnings"
    assert result.failed_rows == 0 and result.row_failures == {}
    assert result.valid is not None and result.valid.num_rows == 2


def test_custom_checks_get_arrow_and_may_return_numpy_lists_or_arrow() -> None:
    table = pa.table({"a": [1, 2, 3, 4], "b": [4, 3, 2, 1]})
    seen: list[list[str]] = []

    def a_below_b(batch: pa.Table) -> pa.Array:
        seen.append(batch.column_names)
        return pc.less(batch.column("a"), batch.column("b"))

    result = run(
        table,
        Custom(name="a_below_b", check=a_below_b, columns=["a", "b"]),
        Custom(name="numpy_even", check=lambda t: np.asarray(t.column("a")) % 2 == 0),
        Custom(name="with_null", check=lambda t: [True, None, True, True]),
    )
    assert seen == [["a", "b"]]
    assert check(result, "a_below_b").detail == "2 of 4 rows (50%) fail a_below_b"
    assert check(result, "with_null").observed == 0.25  # null: not shown to pass
    assert reasons(result) == ["numpy_even", "with_null", "a_below_b; numpy_even", "a_below_b"]
    assert REASON_COLUMN in result.invalid.column_names  # type: ignore[union-attr]
    assert not any(n.startswith("__conveyor") for n in result.invalid.column_names)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("check_fn", "words"),
    [
        (lambda t: [True], "returned 1 values for 3 rows"),
        (lambda t: pa.array([1, 2, 3]), "returned an array of int64, not booleans"),
        (lambda t: 1 / 0, "raised ZeroDivisionError"),
        (lambda t: object(), "not a boolean array"),
    ],
)
def test_a_broken_custom_check_fails_the_batch_with_its_reason(check_fn: Any, words: str) -> None:
    result = run(pa.table({"a": [1, 2, 3]}), Custom(name="broken", check=check_fn))
    found = check(result, "broken")
    assert not found.passed and words in found.detail
    assert result.batch_failures == ("broken",)


# -- batch-level kinds -------------------------------------------------------------------


def test_row_count() -> None:
    table = pa.table({"x": [1, 2, 3]})
    result = run(
        table, RowCount(min=1, max=2), RowCount(min=3, name="enough"), RowCount(max=3, name="few")
    )
    low = check(result, "row_count")
    assert (low.passed, low.observed, low.threshold) == (False, 3, {"min": 1, "max": 2})
    assert low.detail == "3 rows; expected between 1 and 2"
    assert check(result, "enough").passed and check(result, "few").passed
    assert result.batch_failures == ("row_count",)
    assert result.failed_rows == 0  # a batch failure tags no single row


def test_freshness_across_zones_and_units() -> None:
    tokyo = timezone(timedelta(hours=9))
    table = pa.table(
        {
            # 20:00 in Tokyo is 11:00 UTC: one hour before NOW.
            "ts": pa.array(
                [datetime(2024, 6, 1, 20, tzinfo=tokyo), None], pa.timestamp("ms", tz="Asia/Tokyo")
            ),
            "naive": pa.array([datetime(2024, 6, 1, 9), datetime(2024, 5, 1)], pa.timestamp("s")),
            "day": pa.array([date(2024, 5, 30), None], pa.date32()),
            "future": pa.array(
                [datetime(2024, 6, 1, 13, tzinfo=UTC)], pa.timestamp("us", tz="UTC")
            ).take([0, 0]),
        }
    )
    result = run(
        table,
        Freshness(column="ts", max_lag="2h"),
        Freshness(column="naive", max_lag=3 * 3600),
        Freshness(column="day", max_lag="1d"),
        Freshness(column="future", max_lag=60),
    )
    ts = check(result, "ts.freshness")
    assert (ts.passed, ts.observed, ts.threshold) == (True, 3600.0, 7200.0)
    assert ts.detail == "newest ts is 1h old (2024-06-01T11:00:00+00:00); at most 2h allowed"
    assert check(result, "naive.freshness").observed == 3 * 3600  # naive is read as UTC
    day = check(result, "day.freshness")
    assert not day.passed and day.observed == 2.5 * 86400
    assert day.detail.startswith("newest day is 2d 12h old")
    assert check(result, "future.freshness").detail.startswith("newest future is 1h ahead of now")
    assert result.batch_failures == ("day.freshness",)


def test_freshness_with_no_value_fails() -> None:
    table = pa.table({"ts": pa.array([None, None], pa.timestamp("us", tz="UTC"))})
    found = check(run(table, Freshness(column="ts", max_lag="1h")), "ts.freshness")
    assert not found.passed and found.observed is None and "no ts value" in found.detail


def test_freshness_needs_an_aware_now() -> None:
    with pytest.raises(InvalidInputError, match="time-zone aware"):
        validate(pa.table({"x": [1]}), [], subject="s", now=datetime(2024, 1, 1))


def test_schema_types_nullability_aliases_and_extra_columns() -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "amount": pa.array([1.5, None], pa.float64()),
            "name": pa.array(["a", "b"], pa.large_string()),
            "ts": pa.array([NOW, NOW], pa.timestamp("us", tz="UTC")),
            "extra": [True, False],
        }
    )
    declared = [
        {"name": "id", "type": "int64", "nullable": False},
        {"name": "amount", "type": "float64", "nullable": False},
        {"name": "name", "type": "string"},
        {"name": "ts", "type": "timestamp[us, tz=UTC]"},
        {"name": "gone", "type": "int32"},
    ]
    found = check(run(table, Schema(columns=declared, extra_columns=False)), "schema")
    assert not found.passed
    assert found.observed == {
        "missing": ["gone"],
        "wrong_type": {"name": {"expected": "string", "found": "large_string"}},
        "nulls_in_non_nullable": {"amount": 1},
        "unexpected": ["extra"],
    }
    assert found.detail == (
        "missing columns: gone; wrong types: name is large_string, expected string; "
        "nulls in non-nullable columns: amount (1 rows); columns not in the schema: extra"
    )
    good = check(
        run(table, Schema(columns={"id": "int64", "ts": "timestamp[us, tz=UTC]"})), "schema"
    )
    assert good.passed and good.detail == "all 2 expected columns as declared"


def test_schema_change_against_the_accepted_schema() -> None:
    accepted = {
        "columns": [
            {"name": "id", "type": "int64", "nullable": True},
            {"name": "amount", "type": "int64", "nullable": True},
            {"name": "city", "type": "string", "nullable": True},
        ]
    }
    table = pa.table({"id": [1], "amount": [1.5], "country": ["CH"]})
    result = run(table, accepted_schema=accepted)
    assert result.schema_change is not None
    assert result.schema_change.to_dict() == {
        "added": ["country"],
        "removed": ["city"],
        "type_changed": {"amount": ["int64", "double"]},
    }
    statuses = {c.name: c.status for c in result.report.checks}
    assert statuses == {
        "schema.columns_removed": "fail",
        "schema.types_changed": "fail",
        "schema.columns_added": "warn",
    }
    assert result.batch_failures == ("schema.columns_removed", "schema.types_changed")
    same = run(table, accepted_schema=result.schema)
    assert same.report.passed and not same.schema_change.changed  # type: ignore[union-attr]


def test_an_expectation_on_a_missing_or_wrongly_typed_column_fails_the_batch() -> None:
    table = pa.table({"amount": ["12", "x"], "n": [1, 2]})
    result = run(
        table,
        Between(column="amount", min=0),
        MatchesRegex(column="n", pattern="1"),
        NotNull(column="gone"),
        Freshness(column="n", max_lag="1h"),
        InSet(column="n", values=["1"]),
    )
    details = {c.name: c.detail.removeprefix("cannot check: ") for c in result.report.checks}
    assert details == {
        "amount.between": "column 'amount' holds string; between needs a numeric column",
        "n.matches_regex": "column 'n' holds int64; matches_regex needs a string column",
        "gone.not_null": "column 'gone' is not in the data",
        "n.freshness": "column 'n' holds int64; freshness needs a timestamp or date column",
        "n.in_set": "column 'n' holds int64; in_set needs a string column",
    }
    assert len(result.batch_failures) == 5
    assert result.valid is not None and result.valid.num_rows == 2  # nothing split on a guess


# -- inputs ----------------------------------------------------------------------------


def test_an_empty_table_passes_row_checks_and_fails_a_minimum_row_count() -> None:
    table = pa.table({"x": pa.array([], pa.float64()), "s": pa.array([], pa.string())})
    result = run(
        table,
        NotNull(column="x"),
        Between(column="x", min=0),
        Unique(column="s"),
        MatchesRegex(column="s", pattern="a"),
        RowCount(min=1),
    )
    assert [c.status for c in result.report.checks] == ["pass"] * 4 + ["fail"]
    assert check(result, "x.not_null").detail == "0 of 0 rows (0%) are null or NaN"
    assert result.row_count == 0 and result.valid is not None and result.valid.num_rows == 0
    assert result.invalid is not None and result.invalid.column_names == ["x", "s", REASON_COLUMN]


def test_pandas_polars_arrow_and_parquet_agree(tmp_path: Path) -> None:
    data = {"x": [1.0, None, -3.0, 4.0], "s": ["a", "b", "c", "zz"]}
    table = pa.table(data)
    path = tmp_path / "batch.parquet"
    pq.write_table(table, path)
    expectations = [
        Between(column="x", min=0),
        NotNull(column="x"),
        MatchesRegex(column="s", pattern="^.$"),
    ]
    outcomes = []
    for source in (table, pd.DataFrame(data), pl.DataFrame(data), path, str(path)):
        result = run(source, *expectations)
        assert result.invalid is not None and result.valid is not None
        outcomes.append(
            (
                [c.observed for c in result.report.checks],
                result.invalid.to_pylist(),
                result.valid.to_pylist(),
            )
        )
    assert all(o == outcomes[0] for o in outcomes)
    assert outcomes[0][1] == [
        {"x": None, "s": "b", REASON_COLUMN: "x.not_null"},
        {"x": -3.0, "s": "c", REASON_COLUMN: "x.between"},
        {"x": 4.0, "s": "zz", REASON_COLUMN: "s.matches_regex"},
    ]


def test_parquet_without_split_reads_no_rows_into_memory(tmp_path: Path) -> None:
    path = tmp_path / "batch.parquet"
    pq.write_table(pa.table({"x": [1, -1]}), path)
    result = run(path, Between(column="x", min=0), split=False)
    assert result.valid is None and result.invalid is None and result.table is None
    assert result.failed_rows == 1 and result.row_failures == {"x.between": 1}


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no Parquet file at .*missing\.parquet"):
        run(tmp_path / "missing.parquet")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InvalidInputError, match=r"corrupt\.parquet is not a readable Parquet file"):
        run(corrupt)
    with pytest.raises(InvalidInputError, match="reserved"):
        run(pa.table({REASON_COLUMN: ["x"]}))
    with pytest.raises(InvalidInputError, match="reserved"):
        run(pa.table({"__conveyor_row": [1]}))
    with pytest.raises(InvalidInputError, match="'a' appears more than once"):
        run(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]))
    with pytest.raises(InvalidInputError, match="subject"):
        validate(pa.table({"a": [1]}), [], subject="")
    with pytest.raises(InvalidInputError, match="expectations must be a list"):
        validate(pa.table({"a": [1]}), {"kind": "not_null"}, subject="s")  # type: ignore[arg-type]


def test_quoted_and_unicode_column_names() -> None:
    table = pa.table({'we"ird col': [1, None], "prix €": [5.0, -1.0]})
    result = run(table, NotNull(column='we"ird col'), Between(column="prix €", min=0))
    assert reasons(result) == ['we"ird col.not_null; prix €.between']


def test_a_malformed_accepted_schema_is_named() -> None:
    for bad in ({"cols": []}, {"columns": [{"name": "a"}]}, ["a"]):
        with pytest.raises(InvalidInputError, match="accepted_schema must look like"):
            run(pa.table({"a": [1]}), accepted_schema=bad)


def test_concurrent_validations_do_not_see_each_others_batches() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(k: int) -> tuple[int, int]:
        table = pa.table({"x": list(range(k * 100)), "k": [k] * (k * 100)})
        result = run(table, Between(column="x", max=k), InSet(column="k", values=[k]))
        return result.row_count, result.failed_rows

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(one, range(1, 13)))
    assert outcomes == [(k * 100, k * 100 - (k + 1)) for k in range(1, 13)]


def test_importing_validation_loads_neither_duckdb_nor_pyarrow() -> None:
    code = "import conveyor.data.validation, conveyor.data.quarantine"
    assert loaded_of(("duckdb", "pyarrow", "pandas", "numpy", "sqlalchemy"), code) == []


def test_a_parquet_file_is_divided_across_row_groups_like_the_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    table = pa.table(
        {
            "id": pa.array(rng.integers(0, 40, 100)),
            "x": pa.array(rng.normal(0, 1, 100)),
            "s": pa.array(rng.choice(["a", "b", "c", "dd"], 100)),
        }
    )
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=7)
    assert pq.ParquetFile(path).num_row_groups == 15
    expectations = [
        Between(column="x", min=-1, max=1),
        InSet(column="s", values=["a", "b", "c"]),
        Unique(column="id"),
        NotNull(column="s", severity="warning"),
    ]
    from_file, in_memory = run(path, *expectations), run(table, *expectations)
    assert from_file.table is None and in_memory.table is table
    assert from_file.valid is not None and in_memory.valid is not None
    assert from_file.valid.equals(in_memory.valid)
    assert from_file.invalid is not None and in_memory.invalid is not None
    assert from_file.invalid.equals(in_memory.invalid)
    assert from_file.row_failures == in_memory.row_failures
    assert from_file.valid.num_rows + from_file.invalid.num_rows == 100
    assert 0 < from_file.invalid.num_rows < 100
    report_only = run(path, *expectations, split=False)
    assert [c.observed for c in report_only.report] == [c.observed for c in from_file.report]
    assert report_only.failed_rows == from_file.failed_rows


def test_a_custom_check_on_a_parquet_file_gets_the_rows_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3], "b": [3, 2, 1]}), path)
    result = run(path, Custom(name="a_le_b", check=lambda t: pc.less_equal(t["a"], t["b"])))
    assert result.invalid is not None and result.invalid.column("a").to_pylist() == [3]
    assert result.table is not None and result.table.num_rows == 3
