"""The native JSON body: records or columns to an Arrow table, predictions to JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.errors import InvalidInputError
from conveyor.registry import Signature
from conveyor.serving.native import NativeRequest, decode_native_request, encode_predictions


def decode(document: Any) -> NativeRequest:
    return decode_native_request(json.dumps(document).encode())


def invalid(body: Any) -> InvalidInputError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidInputError) as caught:
        decode_native_request(raw)
    return caught.value


def test_records_become_a_table() -> None:
    request = decode(
        {
            "records": [
                {"age": 31, "income": 1200, "plan": "pro", "active": True},
                {"age": 45, "income": 980.5, "plan": None, "active": False},
            ],
            "attributes": {"tier": "beta", "region": 3},
            "id": "req-7",
        }
    )

    table = request.table
    assert table.column_names == ["age", "income", "plan", "active"]
    assert table.to_pydict() == {
        "age": [31, 45],
        "income": [1200.0, 980.5],
        "plan": ["pro", None],
        "active": [True, False],
    }
    assert [str(t) for t in table.schema.types] == ["int64", "double", "string", "bool"]
    assert request.attributes == {"tier": "beta", "region": 3}
    assert request.id == "req-7"


def test_columns_become_the_same_table() -> None:
    from_columns = decode(
        {"columns": {"age": [31, 45], "income": [1200, 980.5], "plan": ["pro", None]}}
    )
    from_records = decode(
        {
            "records": [
                {"age": 31, "income": 1200, "plan": "pro"},
                {"age": 45, "income": 980.5, "plan": None},
            ]
        }
    )

    assert from_columns.table.equals(from_records.table)
    assert from_columns.attributes == {}
    assert from_columns.id is None


def test_keys_missing_from_some_records_read_as_null_in_first_seen_order() -> None:
    table = decode({"records": [{"b": 1, "a": "x"}, {"a": "y", "c": 2.5}]}).table

    assert table.column_names == ["b", "a", "c"]
    assert table.to_pydict() == {"b": [1, None], "a": ["x", "y"], "c": [None, 2.5]}


def test_records_with_keys_in_another_order_line_up_by_name() -> None:
    table = decode({"records": [{"a": 1, "b": "x"}, {"b": "y", "a": 2}]}).table

    assert table.to_pydict() == {"a": [1, 2], "b": ["x", "y"]}


def test_column_types_follow_the_json_values() -> None:
    table = decode(
        {"columns": {"n": [None, None], "f": [1, 2.5], "i": [1, 2], "s": ["a", None]}}
    ).table

    assert [str(t) for t in table.schema.types] == ["null", "double", "int64", "string"]
    assert invalid({"columns": {"big": [2**63, 1]}}).context["field"] == "columns.big"


def test_many_numeric_columns_keep_their_values_and_order() -> None:
    # Two or more float (or int) columns are built through one shared buffer.
    records = [
        {"a": 1.5, "i": 1, "b": 2, "s": "x", "j": -(2**63), "c": 0.25},
        {"a": -1.0, "i": 2, "b": 3.5, "s": "y", "j": 2**63 - 1, "c": 1e300},
    ]

    table = decode({"records": records}).table

    assert table.to_pylist() == [
        {k: float(v) if k in "abc" else v for k, v in r.items()} for r in records
    ]
    assert [str(t) for t in table.schema.types] == [
        "double",
        "int64",
        "double",
        "string",
        "int64",
        "double",
    ]
    overflow = {"records": [{"i": 1, "j": 2**63, "k": 3}]}
    assert invalid(overflow).context["field"] == "records.j"


def test_the_decoded_table_passes_the_models_signature() -> None:
    signature = Signature.infer(pd.DataFrame({"age": [1.0, 2.0], "plan": ["a", "b"]}))

    table = signature.enforce(decode({"records": [{"plan": "pro", "age": 31}]}).table)

    assert table.column_names == ["age", "plan"]
    assert table.column("age").type == pa.float64()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{nope", "body"),
        ([{"records": []}], "body"),
        ("records", "body"),
        ({}, "records"),
        ({"records": [{"a": 1}], "columns": {"a": [1]}}, "records"),
        ({"records": [{"a": 1}], "extra": 1}, "extra"),
        ({"records": []}, "records"),
        ({"records": {"a": 1}}, "records"),
        ({"records": [{}, {}]}, "records"),
        ({"records": [{"a": 1}, [1]]}, "records[1]"),
        ({"records": [{"a": 1}, None]}, "records[1]"),
        ({"records": [{"a": 1}, {"a": "x"}]}, "records.a"),
        ({"records": [{"a": True}, {"a": 1}]}, "records.a"),
        ({"records": [{"a": [1]}, {"a": 2}]}, "records.a"),
        ({"records": [{"a": [1]}, {"a": ["x"]}]}, "records.a"),
        ({"columns": {}}, "columns"),
        ({"columns": [[1]]}, "columns"),
        ({"columns": {"a": 1}}, "columns.a"),
        ({"columns": {"a": []}}, "columns.a"),
        ({"columns": {"a": [1, 2], "b": [1]}}, "columns.b"),
        ({"columns": {"a": [1, "2"]}}, "columns.a"),
        ({"columns": {"a": [1.5, False]}}, "columns.a"),
        ({"columns": {"a": [{"x": 1}, "y"]}}, "columns.a"),
        ({"columns": {"a": [1]}, "attributes": ["beta"]}, "attributes"),
        ({"columns": {"a": [1]}, "attributes": {"tier": {"x": 1}}}, "attributes.tier"),
        ({"columns": {"a": [1]}, "attributes": {"tier": None}}, "attributes.tier"),
        ({"columns": {"a": [1]}, "id": 7}, "id"),
    ],
)
def test_malformed_bodies_name_the_field(body: Any, field: str) -> None:
    assert invalid(body).context["field"] == field


def test_a_mixed_column_says_which_types_it_mixes() -> None:
    error = invalid({"columns": {"age": [1, "2", None]}})

    assert error.message == "columns.age mixes value types (integer, string)"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=100),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"records": st.lists(json_values, max_size=4) | json_values},
            optional={"attributes": json_values, "id": json_values},
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"columns": st.dictionaries(st.text(max_size=3), st.lists(json_values, max_size=3))},
            optional={"attributes": json_values},
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_malformed_body_raises_only_invalid_input(body: bytes) -> None:
    try:
        request = decode_native_request(body)
    except InvalidInputError as exc:
        error: InvalidInputError | None = exc
    else:
        error = None
    if error is not None:
        assert isinstance(error.context["field"], str)  # may be "" for a key named ""
    else:
        assert request.table.num_rows > 0


def test_predictions_are_written_with_where_they_came_from() -> None:
    body = encode_predictions(
        np.array([1, 0, 1]), model="churn", version=3, arm="canary", request_id="r-1", cached=False
    )

    assert orjson.loads(body) == {
        "predictions": [1, 0, 1],
        "model": "churn",
        "version": 3,
        "arm": "canary",
        "request_id": "r-1",
        "cached": False,
    }


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        (np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32), [[0.25, 0.75], [1.0, 0.0]]),
        (np.array([0.5, math.nan]), [0.5, None]),
        (np.array(["yes", "no"]), ["yes", "no"]),
        (np.array([b"yes", "no", 3], dtype=object), ["yes", "no", 3]),
        (np.array([True, False]), [True, False]),
        (pd.Series([1.5, 2.5]), [1.5, 2.5]),
        (pd.Series(["a", "b"]), ["a", "b"]),
        (pa.array([1, None]), [1, None]),
        ([np.int64(4), np.float32(0.5)], [4, 0.5]),
        ([1, 2], [1, 2]),
    ],
    ids=[
        "proba",
        "nan",
        "str",
        "object",
        "bool",
        "series",
        "str-series",
        "arrow",
        "scalars",
        "list",
    ],
)
def test_predictions_of_every_shape_are_json(pred: Any, expected: Any) -> None:
    body = encode_predictions(pred, model="m", version="2", arm=None, request_id="r", cached=True)

    assert orjson.loads(body)["predictions"] == expected
