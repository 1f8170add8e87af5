"""Rows against a signature, one by one: what fits is converted, the rest kept with a reason."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from conveyor.registry.signature import Signature
from conveyor.scoring.rows import REASON, ROW, split_rows

SIGNATURE = Signature.infer(
    pd.DataFrame({"amount": [1.5, 2.0], "count": [1, 2], "city": ["a", "b"]})
)


def test_rows_that_fit_are_converted_and_the_rest_rejected_with_their_reason() -> None:
    table = pa.table(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "amount": ["1.5", "abc", None, "2", "3", " "],
            "count": [1.0, 2.5, 3.0, 4.0, None, 6.0],
            "city": ["u", "v", "w", "x", "y", "z"],
        }
    )
    model_input, passed, rejected = split_rows(SIGNATURE, table, offset=100)
    assert model_input.schema.equals(SIGNATURE.arrow_schema())
    assert model_input.column("amount").to_pylist() == [1.5, 2.0]
    assert model_input.column("count").to_pylist() == [1, 4]
    assert passed.column("id").to_pylist() == [1, 4]  # every input column, converted ones too
    ids, why = rejected.column("id").to_pylist(), rejected.column(REASON).to_pylist()
    reasons = dict(zip(ids, why, strict=True))
    assert set(reasons) == {2, 3, 5, 6}
    assert "'amount': not a number" in reasons[2]
    assert "'count'" not in reasons[2]  # the first reason of a row wins
    assert "'amount' is null" in reasons[3]
    assert "'count' is null" in reasons[5]
    assert "'amount' is null" in reasons[6]  # blank text is a missing value
    assert rejected.column(ROW).to_pylist() == [101, 102, 104, 105]
    assert rejected.column("amount").to_pylist()[0] == "abc"  # kept as it came


def test_a_fraction_or_an_overflow_in_an_integer_column_is_rejected() -> None:
    table = pa.table(
        {"amount": [1.0, 2.0, 3.0], "count": [2.0, 0.5, 1e30], "city": ["a", "b", "c"]}
    )
    _, passed, rejected = split_rows(SIGNATURE, table)
    assert passed.num_rows == 1
    assert all("not a whole number" in r for r in rejected.column(REASON).to_pylist())


def test_a_missing_column_rejects_every_row_of_the_chunk_and_names_it() -> None:
    table = pa.table({"amount": [1.0, 2.0], "city": ["a", "b"]})
    model_input, _, rejected = split_rows(SIGNATURE, table)
    assert model_input.num_rows == 0
    assert rejected.num_rows == 2
    assert "input column 'count' is missing" in rejected.column(REASON)[0].as_py()


@pytest.mark.parametrize("key", [[None, 2], None])
def test_a_sink_key_must_be_present_and_not_null(key: list[int | None] | None) -> None:
    columns = {"amount": [1.0, 2.0], "count": [1, 2], "city": ["a", "b"]}
    if key is not None:
        columns["id"] = key  # type: ignore[assignment]
    _, passed, rejected = split_rows(SIGNATURE, pa.table(columns), required=("id",))
    assert passed.num_rows == (1 if key is not None else 0)
    assert "(the output key)" in rejected.column(REASON)[0].as_py()


def test_without_a_signature_every_row_passes() -> None:
    table = pa.table({"x": [1, None]})
    model_input, passed, rejected = split_rows(None, table)
    assert model_input.num_rows == passed.num_rows == 2 and rejected.num_rows == 0
