"""Expectations from plain mappings: defaults, names, and errors naming index and field."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.data.validation import (
    Between,
    Custom,
    Freshness,
    InSet,
    RowCount,
    Schema,
    Unique,
    parse_duration,
    parse_expectations,
)
from conveyor.errors import ConfigError

WHERE = "datasets.tx.expectations"


def is_even(table: Any) -> Any:
    import pyarrow.compute as pc

    return pc.equal(pc.bit_wise_and(table.column("id"), 1), 0)


def _error(items: list[Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_expectations(items, where=WHERE)
    return info.value


def test_every_kind_parses_with_derived_names_and_defaults() -> None:
    parsed = parse_expectations(
        [
            {"kind": "schema", "columns": {"id": "int64", "amount": "double"}},
            {"kind": "not_null", "column": "id"},
            {"kind": "between", "column": "amount", "min": 0, "max": 50_000},
            {"kind": "in_set", "column": "cat", "values": ["a", "b"], "mostly": 0.99},
            {"kind": "matches_regex", "column": "email", "pattern": "@", "severity": "warning"},
            {"kind": "unique", "columns": ["a", "b"]},
            {"kind": "row_count", "min": 1},
            {"kind": "freshness", "column": "ts", "max_lag": "2h"},
            {"kind": "custom", "name": "even", "check": f"{__name__}:is_even"},
        ],
        where=WHERE,
    )
    names = [e.name for e in parsed]
    assert names == [
        "schema",
        "id.not_null",
        "amount.between",
        "cat.in_set",
        "email.matches_regex",
        "a+b.unique",
        "row_count",
        "ts.freshness",
        "even",
    ]
    between = parsed[2]
    assert isinstance(between, Between)
    assert (between.mostly, between.severity, between.strict_min) == (1.0, "error", False)
    assert isinstance(parsed[3], InSet) and parsed[3].mostly == 0.99
    assert parsed[4].severity == "warning"
    assert isinstance(parsed[5], Unique) and parsed[5].keys == ("a", "b")
    assert isinstance(parsed[7], Freshness) and parsed[7].max_lag == 7200.0
    assert isinstance(parsed[8], Custom) and parsed[8].check is is_even
    schema = parsed[0]
    assert isinstance(schema, Schema)
    assert [(c.name, c.type, c.nullable) for c in schema.columns] == [
        ("id", "int64", True),
        ("amount", "double", True),
    ]


def test_python_objects_pass_through_and_an_explicit_name_wins() -> None:
    objects = [Between(column="amount", min=0, name="amount_positive"), RowCount(max=10)]
    assert parse_expectations(objects) == objects
    assert objects[0].name == "amount_positive"


@pytest.mark.parametrize(
    ("items", "field", "words"),
    [
        (
            [
                {"kind": "row_count", "min": 1},
                {"kind": "between", "column": "a", "min": "b", "max": "a"},
            ],
            "[1]",
            "greater than max",
        ),
        ([{"kind": "between", "column": "a"}], "[0]", "min, max or both"),
        ([{"kind": "between", "column": "a", "min": 5, "max": 1}], "[0]", "greater than max"),
        ([{"kind": "between", "column": "a", "min": True}], "[0].min", "not a bool"),
        ([{"kind": "between", "column": "a", "min": float("nan")}], "[0].min", "NaN"),
        ([{"kind": "between", "column": "a", "min": [1]}], "[0].min", ""),
        ([{"kind": "not_null"}], "[0].column", "required"),
        ([{"kind": "not_null", "column": "a", "mostly": 1.5}], "[0].mostly", "less than or equal"),
        ([{"kind": "not_null", "column": "a", "severity": "fatal"}], "[0].severity", "error"),
        ([{"kind": "not_null", "column": "a", "colour": "red"}], "[0].colour", "Extra inputs"),
        ([{"kind": "in_set", "column": "a", "values": []}], "[0].values", "at least 1"),
        (
            [{"kind": "matches_regex", "column": "a", "pattern": "("}],
            "[0].pattern",
            "regular expression",
        ),
        ([{"kind": "unique", "column": "a", "columns": ["b"]}], "[0]", "either column or columns"),
        ([{"kind": "unique"}], "[0]", "either column or columns"),
        ([{"kind": "row_count", "min": -1}], "[0].min", "greater than or equal to 0"),
        ([{"kind": "row_count", "mostly": 0.5, "min": 1}], "[0].mostly", "Extra inputs"),
        (
            [{"kind": "freshness", "column": "ts", "max_lag": "soon"}],
            "[0].max_lag",
            "not a duration",
        ),
        ([{"kind": "freshness", "column": "ts", "max_lag": -5}], "[0].max_lag", "positive"),
        ([{"kind": "schema", "columns": []}], "[0].columns", "at least 1"),
        ([{"kind": "schema", "columns": [{"name": "a"}]}], "[0].columns[0].type", "required"),
        ([{"kind": "custom", "check": f"{__name__}:is_even"}], "[0].name", "required"),
        (
            [{"kind": "custom", "name": "c", "check": "no_such_module_here:f"}],
            "[0].check",
            "cannot import",
        ),
        ([{"kind": "custom", "name": "c", "check": "os.path"}], "[0].check", "import string"),
        ([{"kind": "not_null", "column": "a", "name": "bad;name"}], "[0].name", "';'"),
    ],
)
def test_errors_name_the_index_and_the_field(items: list[Any], field: str, words: str) -> None:
    error = _error(items)
    assert str(error).startswith(f"{WHERE}{field}"), str(error)
    assert words in str(error)
    assert error.context["field"].startswith(f"{WHERE}{field}")


def test_unknown_or_missing_kind_lists_the_kinds() -> None:
    error = _error([{"kind": "row_count", "min": 0}, {"kind": "between_ish", "column": "a"}])
    assert str(error).startswith(f"{WHERE}[1].kind: unknown kind 'between_ish'")
    assert "matches_regex" in str(error)
    assert str(_error([{"column": "a"}])).startswith(f"{WHERE}[0].kind: no kind")
    assert "mapping" in str(_error(["not_null"]))
    assert "list" in str(_error({"kind": "not_null"}))  # type: ignore[arg-type]


def test_two_expectations_with_one_name_are_refused() -> None:
    error = _error(
        [
            {"kind": "between", "column": "amount", "min": 0},
            {"kind": "between", "column": "amount", "max": 10},
        ]
    )
    assert str(error).startswith(
        f"{WHERE}[1].name: 'amount.between' is also the name of {WHERE}[0]"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1w", 604800),
        ("500ms", 0.5),
        (" 2 H ", 7200),
        (45, 45),
        (2.5, 2.5),
        (timedelta(minutes=3), 180),
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "h", "2h junk", "-1h", "0s", True, None, float("inf")])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(0, 10_000), st.sampled_from(["s", "m", "h", "d"]))
def test_duration_text_is_that_many_units(count: int, unit: str) -> None:
    size = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if count == 0:
        with pytest.raises(ValueError):
            parse_duration(f"{count}{unit}")
    else:
        assert parse_duration(f"{count}{unit}") == count * size
