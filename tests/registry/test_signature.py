"""Signatures: inferred from training frames, enforced at predict naming the column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from registry_support import labels, training_frame

from conveyor.errors import InvalidInputError
from conveyor.registry import Registry, Signature


def test_inferred_from_pandas_polars_and_arrow_alike() -> None:
    frame = training_frame(10)
    expected = Signature.infer(frame)
    assert expected.names == ["age", "income", "score"]
    assert [c.type for c in expected.inputs] == ["int64", "double", "double"]
    assert not any(c.nullable for c in expected.inputs)
    assert Signature.infer(pl.from_pandas(frame)) == expected
    assert Signature.infer(pa.Table.from_pandas(frame, preserve_index=False)) == expected
    assert Signature.from_dict(expected.to_dict()) == expected


def test_a_column_with_nulls_in_training_is_nullable() -> None:
    signature = Signature.infer(pa.table({"x": [1.0, None], "y": ["a", "b"]}))
    assert [(c.name, c.nullable) for c in signature.inputs] == [("x", True), ("y", False)]
    enforced = signature.enforce(pa.table({"x": [None], "y": ["c"]}))
    assert enforced.column("x").null_count == 1


def test_enforce_reorders_and_widens_safely() -> None:
    signature = Signature.infer(pa.table({"a": [1.5], "b": [1]}))
    out = signature.enforce(pd.DataFrame({"b": [2], "a": [3]}))
    assert out.column_names == ["a", "b"]
    assert out.schema.field("a").type == pa.float64()
    assert out.column("a").to_pylist() == [3.0]


@pytest.mark.parametrize(
    ("frame", "column", "message"),
    [
        (pd.DataFrame({"age": [30], "income": [1.0]}), "score", "missing"),
        (
            pd.DataFrame({"age": [30], "income": [1.0], "score": [0.5], "zip": ["x"]}),
            "zip",
            "not in the model's signature",
        ),
        (pd.DataFrame({"age": [30], "income": ["lots"], "score": [0.5]}), "income", "type"),
        (pd.DataFrame({"age": [30.5], "income": [1.0], "score": [0.5]}), "age", "type"),
        (pd.DataFrame({"age": [30], "income": [None], "score": [0.5]}), "income", "null"),
    ],
)
def test_a_mismatch_names_the_column(frame: pd.DataFrame, column: str, message: str) -> None:
    signature = Signature.infer(training_frame(10))
    with pytest.raises(InvalidInputError, match=message) as err:
        signature.enforce(frame)
    assert err.value.context["field"] == column
    assert repr(column) in str(err.value)


def test_extra_columns_can_be_allowed_and_are_dropped() -> None:
    signature = Signature.infer(training_frame(10))
    frame = training_frame(5).assign(zip="x")
    assert signature.enforce(frame, allow_extra=True).column_names == signature.names


def test_predict_enforces_the_signature(sqlite_registry: Registry) -> None:
    from sklearn.linear_model import LogisticRegression

    frame = training_frame()
    model = LogisticRegression(max_iter=500).fit(frame, labels(frame))
    sqlite_registry.register("churn", model, signature_from=frame)
    loaded = sqlite_registry.load("churn")
    with pytest.raises(InvalidInputError, match="'score' is missing"):
        loaded.predict(frame.drop(columns=["score"]))
    # Columns in another order are put back in training order, not fed silently.
    shuffled = frame[["score", "age", "income"]]
    np.testing.assert_array_equal(loaded.predict(shuffled), model.predict(frame))
    np.testing.assert_array_equal(
        loaded.predict(pl.from_pandas(frame.assign(extra=1)), allow_extra=True),
        model.predict(frame),
    )


def test_integral_floats_are_read_as_integers() -> None:
    """Python and pandas clients send 3.0 for an integer column: it is 3."""
    signature = Signature.infer(training_frame(10))  # age is int64
    frame = pd.DataFrame({"age": [30.0, 41.0], "income": [1.0, 2.0], "score": [0.5, 0.1]})
    out = signature.enforce(frame)
    assert out.schema.field("age").type == pa.int64()
    assert out.column("age").to_pylist() == [30, 41]
    from conveyor.serving.native import decode_native_request

    body = b'{"records": [{"age": 3.0, "income": 1, "score": 0.5}]}'
    assert signature.enforce(decode_native_request(body).table).column("age").to_pylist() == [3]


@pytest.mark.parametrize(
    ("values", "shown", "row"),
    [([30.0, 3.5], "3.5", 1), ([float("nan"), 2.0], "nan", 0), ([float("inf"), 2.0], "inf", 0)],
)
def test_a_float_that_is_not_a_whole_number_is_refused_naming_the_column(
    values: list[float], shown: str, row: int
) -> None:
    signature = Signature.infer(training_frame(10))
    # Arrow, not pandas: pandas reads NaN as a missing value (the null check's error).
    frame = pa.table({"age": values, "income": [1.0, 2.0], "score": [0.5, 0.1]})
    with pytest.raises(InvalidInputError) as err:
        signature.enforce(frame)
    assert err.value.code == "invalid_input"
    assert err.value.context["field"] == "age"
    assert err.value.context["row"] == row
    assert f"'age' has type double with {shown} at row {row}" in str(err.value)
    assert "the model was trained on int64" in str(err.value)


def test_an_integral_float_beyond_int64_is_refused() -> None:
    signature = Signature.infer(training_frame(10))
    frame = pd.DataFrame({"age": [1e30], "income": [1.0], "score": [0.5]})
    with pytest.raises(InvalidInputError, match="beyond the range of int64") as err:
        signature.enforce(frame)
    assert err.value.context["field"] == "age"
