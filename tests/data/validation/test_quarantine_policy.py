"""Policies decide what continues and what waits; no policy ever loses a row.

The property tests draw random tables (nulls, NaN, unicode, duplicates) and
random bounds, and compare the split with a plain-Python reading of each
expectation, row by row.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.data.quarantine import BATCH_REJECTED, apply_policy
from conveyor.data.validation import (
    REASON_COLUMN,
    Between,
    InSet,
    MatchesRegex,
    NotNull,
    RowCount,
    Unique,
    ValidationResult,
    validate,
)
from conveyor.errors import InvalidInputError

TABLE = pa.table(
    {
        "id": [1, 2, 3, 4, 5, 6],
        "amount": [10.0, -1.0, 20.0, None, 70_000.0, 5.0],
        "cat": ["a", "b", "z", "a", "a", "b"],
    }
)
ROW_CHECKS = [
    Between(column="amount", min=0, max=50_000),
    InSet(column="cat", values=["a", "b"]),
    NotNull(column="amount"),
]


def judged(table: pa.Table, *expectations: Any) -> ValidationResult:
    return validate(table, list(expectations), subject="dataset:t")


def rows(table: pa.Table | None) -> Counter[tuple[Any, ...]]:
    """The rows as a multiset, the reason column left out, NaN made comparable."""
    if table is None:
        return Counter()
    if REASON_COLUMN in table.column_names:
        table = table.drop_columns([REASON_COLUMN])
    return Counter(
        tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row.values())
        for row in table.to_pylist()
    )


def test_quarantine_sets_failing_rows_aside_and_lets_the_rest_through() -> None:
    decision = apply_policy(judged(TABLE, *ROW_CHECKS), "quarantine")
    assert not decision.batch_rejected
    assert decision.accepted is not None and decision.accepted.column("id").to_pylist() == [1, 6]
    assert decision.quarantined is not None
    assert decision.quarantined.to_pydict() == {
        "id": [2, 3, 4, 5],
        "amount": [-1.0, 20.0, None, 70_000.0],
        "cat": ["b", "z", "a", "a"],
        REASON_COLUMN: ["amount.between", "cat.in_set", "amount.not_null", "amount.between"],
    }
    assert decision.reasons == {"amount.between": 2, "cat.in_set": 1, "amount.not_null": 1}
    assert REASON_COLUMN not in decision.accepted.column_names


def test_quarantine_rejects_the_whole_batch_on_a_batch_level_failure() -> None:
    decision = apply_policy(judged(TABLE, *ROW_CHECKS, RowCount(min=10)), "quarantine")
    assert decision.batch_rejected and decision.accepted is None
    assert decision.quarantined is not None and decision.quarantined.num_rows == 6
    tagged = dict(
        zip(
            decision.quarantined.column("id").to_pylist(),
            decision.quarantined.column(REASON_COLUMN).to_pylist(),
            strict=True,
        )
    )
    assert tagged == {
        1: "row_count",
        6: "row_count",
        2: "row_count; amount.between",
        3: "row_count; cat.in_set",
        4: "row_count; amount.not_null",
        5: "row_count; amount.between",
    }
    assert decision.reasons == {
        "row_count": 6,
        "amount.between": 2,
        "cat.in_set": 1,
        "amount.not_null": 1,
    }


def test_quarantine_rejects_a_batch_whose_accepted_column_disappeared() -> None:
    accepted = {
        "columns": [
            {"name": "id", "type": "int64", "nullable": True},
            {"name": "gone", "type": "string", "nullable": True},
        ]
    }
    result = validate(TABLE, [], subject="dataset:t", accepted_schema=accepted)
    decision = apply_policy(result, "quarantine")
    assert decision.batch_rejected
    assert decision.quarantined is not None
    assert set(decision.quarantined.column(REASON_COLUMN).to_pylist()) == {"schema.columns_removed"}


def test_fail_rejects_for_row_failures_and_tags_every_row() -> None:
    decision = apply_policy(judged(TABLE, *ROW_CHECKS), "fail")
    assert decision.batch_rejected and decision.accepted is None
    assert decision.quarantined is not None
    assert sorted(decision.quarantined.column(REASON_COLUMN).to_pylist()) == sorted(
        [
            BATCH_REJECTED,
            BATCH_REJECTED,
            f"{BATCH_REJECTED}; amount.between",
            f"{BATCH_REJECTED}; cat.in_set",
            f"{BATCH_REJECTED}; amount.not_null",
            f"{BATCH_REJECTED}; amount.between",
        ]
    )
    assert decision.reasons[BATCH_REJECTED] == 6


def test_fail_accepts_a_passing_batch_but_still_sets_tolerated_rows_aside() -> None:
    decision = apply_policy(
        judged(TABLE, InSet(column="cat", values=["a", "b"], mostly=0.8)), "fail"
    )
    assert not decision.batch_rejected
    assert decision.accepted is not None and decision.accepted.num_rows == 5
    assert decision.quarantined is not None
    assert decision.quarantined.column(REASON_COLUMN).to_pylist() == ["cat.in_set"]


def test_warn_keeps_everything_in_order_and_records_the_failures() -> None:
    decision = apply_policy(judged(TABLE, *ROW_CHECKS, RowCount(max=2)), "warn")
    assert not decision.batch_rejected and decision.quarantined is None
    assert decision.accepted is not None and decision.accepted.equals(TABLE)
    assert decision.reasons == {
        "row_count": 6,
        "amount.between": 2,
        "cat.in_set": 1,
        "amount.not_null": 1,
    }


def test_a_clean_batch_quarantines_nothing_under_any_policy() -> None:
    clean = TABLE.filter(pa.array([True, False, False, False, False, True]))
    for policy in ("fail", "quarantine", "warn"):
        decision = apply_policy(judged(clean, *ROW_CHECKS), policy)  # type: ignore[arg-type]
        assert decision.accepted is not None and decision.accepted.equals(clean)
        assert decision.quarantined is None and decision.reasons == {}


def test_policy_misuse_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="policy must be one of"):
        apply_policy(judged(TABLE), "drop")  # type: ignore[arg-type]
    unsplit = validate(TABLE, ROW_CHECKS, subject="s", split=False)
    with pytest.raises(InvalidInputError, match="split=True"):
        apply_policy(unsplit, "quarantine")


# -- properties ------------------------------------------------------------------------

_ints = st.one_of(st.none(), st.integers(-5, 5))
_floats = st.one_of(
    st.none(), st.just(math.nan), st.floats(-100, 100, allow_nan=False, allow_infinity=False)
)
_strings = st.one_of(st.none(), st.sampled_from(["a", "b", "ab", "é", "東", "", "b a"]))
_bound = st.one_of(st.none(), st.integers(-5, 5))


@st.composite
def batches(draw: st.DrawFn) -> tuple[pa.Table, list[Any]]:
    size = draw(st.integers(0, 30))
    table = pa.table(
        {
            "i": pa.array(draw(st.lists(_ints, min_size=size, max_size=size)), pa.int64()),
            "f": pa.array(draw(st.lists(_floats, min_size=size, max_size=size)), pa.float64()),
            "s": pa.array(draw(st.lists(_strings, min_size=size, max_size=size)), pa.string()),
        }
    )
    low, high = sorted([draw(st.integers(-5, 5)), draw(st.integers(-5, 5))])
    f_low = draw(_bound)
    expectations: list[Any] = [
        Between(column="i", min=low, max=high, strict_min=draw(st.booleans())),
        Between(column="f", min=f_low if f_low is not None else -50, max=draw(st.just(60.5))),
        NotNull(column="f", mostly=draw(st.floats(0, 1))),
        InSet(column="s", values=draw(st.lists(st.sampled_from(["a", "b", "é", ""]), min_size=1))),
        Unique(column="i"),
        MatchesRegex(column="s", pattern=draw(st.sampled_from(["^a", "b$", "^.$", "東"]))),
        NotNull(column="s", severity="warning"),
    ]
    return table, expectations


def breaks(expectation: Any, row: dict[str, Any], table: pa.Table) -> bool:
    """Plain Python: does ``row`` break ``expectation``?"""
    value = row.get(getattr(expectation, "column", None) or "")
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if isinstance(expectation, NotNull):
        return missing
    if missing:
        return False
    if isinstance(expectation, Between):
        low_ok = expectation.min is None or (
            value > expectation.min if expectation.strict_min else value >= expectation.min
        )
        high_ok = expectation.max is None or value <= expectation.max
        return not (low_ok and high_ok)
    if isinstance(expectation, InSet):
        return value not in expectation.values
    if isinstance(expectation, MatchesRegex):
        return re.search(expectation.pattern, value) is None
    if isinstance(expectation, Unique):
        return table.column("i").to_pylist().count(value) > 1
    raise AssertionError(expectation)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_every_row_is_valid_or_invalid_with_each_reason_it_earns(
    batch: tuple[pa.Table, list[Any]],
) -> None:
    table, expectations = batch
    result = validate(table, expectations, subject="dataset:random")
    assert result.valid is not None and result.invalid is not None
    expected_valid, expected_invalid = [], []
    for row in table.to_pylist():
        earned = [e.name for e in expectations if e.severity == "error" and breaks(e, row, table)]
        if earned:
            expected_invalid.append({**row, REASON_COLUMN: "; ".join(earned)})
        else:
            expected_valid.append(row)
    nan_safe = lambda rows: [  # noqa: E731
        {k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in rows
    ]
    assert nan_safe(result.invalid.to_pylist()) == nan_safe(expected_invalid)
    assert nan_safe(result.valid.to_pylist()) == nan_safe(expected_valid)
    assert result.failed_rows == len(expected_invalid)
    for e in expectations:
        if e.severity == "error":
            count = sum(breaks(e, row, table) for row in table.to_pylist())
            assert result.row_failures[e.name] == count
    # The report-only pass counts in SQL what the split counted from the failing rows.
    unsplit = validate(table, expectations, subject="dataset:random", split=False)
    assert unsplit.report.to_dict()["checks"] == result.report.to_dict()["checks"]
    assert (unsplit.failed_rows, unsplit.row_failures) == (result.failed_rows, result.row_failures)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.sampled_from(["fail", "quarantine", "warn"]), st.integers(0, 40))
def test_no_policy_drops_a_row(
    batch: tuple[pa.Table, list[Any]], policy: Any, min_rows: int
) -> None:
    table, expectations = batch
    result = validate(table, [*expectations, RowCount(min=min_rows)], subject="dataset:random")
    decision = apply_policy(result, policy)
    if decision.batch_rejected:
        assert decision.accepted is None
        assert rows(decision.quarantined) == rows(table)
    else:
        assert rows(decision.accepted) + rows(decision.quarantined) == rows(table)
    if decision.quarantined is not None:
        reasons = decision.quarantined.column(REASON_COLUMN).to_pylist()
        assert all(reasons), "every quarantined row says why"
    if policy == "warn":
        assert decision.quarantined is None and decision.accepted is not None
