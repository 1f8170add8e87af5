"""The v2 codec against NVIDIA's own client: request bodies it builds, responses it parses."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.errors import InvalidInputError
from conveyor.serving.protocol_v2 import (
    HEADER_LENGTH,
    Tensor,
    TensorMetadata,
    datatype_for_arrow,
    datatype_of,
    decode_infer_request,
    encode_infer_response,
    model_metadata,
    outputs_from_predictions,
    parse_header_length,
    server_metadata,
    table_from_inputs,
)

NUMERIC = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 7, 255], [1, 2, 3]], dtype=np.uint8),
    "UINT16": np.array([[0, 7, 65535], [1, 2, 3]], dtype=np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1], [1, 2, 3]], dtype=np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1], [1, 2, 3]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127], [1, -2, 3]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1], [1, -2, 3]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [1, -2, 3]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [1, -2, 3]], dtype=np.int64),
    "FP16": np.array([[0.5, -1.25, 65504.0], [1e-3, 2.0, 3.0]], dtype=np.float16),
    "FP32": np.array([[0.1, -1.5, 3.4e38], [1e-30, 2.0, 3.0]], dtype=np.float32),
    "FP64": np.array([[0.1, -1.5, 1.7e308], [5e-324, 2.0, 3.0]], dtype=np.float64),
}
STRINGS = np.array([[b"", b"caf\xc3\xa9"], [b"a b", b"\xe2\x82\xac10"]], dtype=object)
RAW_BYTES = np.array([b"\x00\xff\xfe", b"", b"plain"], dtype=object)


def client_request(
    arrays: dict[str, tuple[np.ndarray, str, bool]], **kwargs: Any
) -> tuple[bytes, int | None]:
    """A request body and header length exactly as tritonclient sends them."""
    inputs = []
    for name, (array, datatype, binary) in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, header_length = triton.InferenceServerClient.generate_request_body(inputs, **kwargs)
    return bytes(body), header_length


def client_parse(body: bytes, headers: dict[str, str]) -> triton.InferResult:
    length = headers.get(HEADER_LENGTH)
    return triton.InferResult.from_response_body(
        body, header_length=None if length is None else int(length)
    )


def invalid(body: bytes, header_length: int | None = None) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        decode_infer_request(body, header_length)
    return caught.value


def json_request(*inputs: dict[str, Any], **extra: Any) -> bytes:
    # The standard library, since orjson refuses to write integers beyond 64 bits.
    return json.dumps({"inputs": list(inputs), **extra}).encode()


# -- requests ------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", sorted(NUMERIC))
def test_every_numeric_datatype_decodes_from_the_client(datatype: str, binary: bool) -> None:
    array = NUMERIC[datatype]
    body, header_length = client_request({"x": (array, datatype, binary)})
    assert (header_length is not None) == binary

    request = decode_infer_request(body, header_length)

    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, (2, 3))
    assert tensor.data.dtype == array.dtype
    np.testing.assert_array_equal(tensor.data, array)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_decode_from_the_client(binary: bool) -> None:
    body, header_length = client_request({"s": (STRINGS, "BYTES", binary)})

    (tensor,) = decode_infer_request(body, header_length).inputs

    assert (tensor.datatype, tensor.shape) == ("BYTES", (2, 2))
    assert tensor.data.tolist() == STRINGS.tolist()


def test_non_utf8_bytes_decode_from_binary() -> None:
    body, header_length = client_request({"raw": (RAW_BYTES, "BYTES", True)})

    (tensor,) = decode_infer_request(body, header_length).inputs

    assert tensor.data.tolist() == RAW_BYTES.tolist()


def test_a_mixed_request_keeps_every_input_its_id_and_requested_outputs() -> None:
    body, header_length = client_request(
        {
            "a": (NUMERIC["FP32"], "FP32", True),
            "b": (NUMERIC["INT64"], "INT64", False),
            "c": (STRINGS, "BYTES", True),
            "d": (NUMERIC["BOOL"], "BOOL", True),
            "e": (np.zeros((0, 3), dtype=np.float64), "FP64", True),
        },
        outputs=[
            triton.InferRequestedOutput("predict", binary_data=False),
            triton.InferRequestedOutput("predict_proba", binary_data=True),
        ],
        request_id="req-42",
        parameters={"tenant": "acme"},
    )

    request = decode_infer_request(body, header_length)

    assert request.id == "req-42"
    assert request.parameters == {"tenant": "acme"}
    assert [t.name for t in request.inputs] == ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(request.inputs[0].data, NUMERIC["FP32"])
    np.testing.assert_array_equal(request.inputs[1].data, NUMERIC["INT64"])
    assert request.inputs[2].data.tolist() == STRINGS.tolist()
    np.testing.assert_array_equal(request.inputs[3].data, NUMERIC["BOOL"])
    assert request.inputs[4].data.shape == (0, 3)
    assert [(o.name, o.binary_data) for o in request.outputs] == [
        ("predict", False),
        ("predict_proba", True),
    ]
    assert request.binary_outputs() == {"predict_proba"}


def test_a_request_naming_no_output_asks_for_binary_outputs() -> None:
    # tritonclient sets parameters.binary_data_output when no output is named.
    body, header_length = client_request({"x": (NUMERIC["FP32"], "FP32", False)})

    request = decode_infer_request(body, header_length)

    assert request.binary_data_output is True
    assert request.binary_outputs() is True


def test_binary_inputs_are_zero_copy_views_of_the_body() -> None:
    body, header_length = client_request({"x": (NUMERIC["FP64"], "FP64", True)})

    (tensor,) = decode_infer_request(body, header_length).inputs

    assert not tensor.data.flags.writeable
    assert not tensor.data.flags.owndata


def test_binary_bool_reads_any_non_zero_byte_as_true() -> None:
    header = json_request(
        {"name": "b", "shape": [3], "datatype": "BOOL", "parameters": {"binary_data_size": 3}}
    )

    (tensor,) = decode_infer_request(header + b"\x00\x02\x01", len(header)).inputs

    assert tensor.data.tolist() == [False, True, True]


def test_json_data_may_be_nested_row_major() -> None:
    body = json_request(
        {"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]},
        {"name": "s", "shape": [1, 2], "datatype": "BYTES", "data": [["é", "b"]]},
        {"name": "f", "shape": [4], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]},
    )

    x, s, f = decode_infer_request(body, None).inputs

    assert x.data.tolist() == [[1, 2], [3, 4]]
    assert x.data.dtype == np.int32
    assert s.data.tolist() == [["é".encode(), b"b"]]
    assert f.data.tolist() == [1.0, 2.5, 3.0, 4.0]


def test_parse_header_length() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length("120") == 120
    for bad in ("-1", "abc", "", "1.5", "١٢"):
        with pytest.raises(InvalidInputError) as caught:
            parse_header_length(bad)
        assert caught.value.context["field"] == HEADER_LENGTH


# -- malformed requests ----------------------------------------------------------


def test_a_header_length_beyond_the_body_is_refused() -> None:
    body, header_length = client_request({"x": (NUMERIC["FP32"], "FP32", True)})
    assert header_length is not None

    error = invalid(body, len(body) + 1)

    assert error.context["field"] == HEADER_LENGTH
    assert invalid(body, -1).context["field"] == HEADER_LENGTH


def test_a_binary_buffer_shorter_than_its_shape_is_refused() -> None:
    body, header_length = client_request({"x": (NUMERIC["FP32"], "FP32", True)})

    error = invalid(body[:-4], header_length)

    assert error.context["field"] == "inputs[0].parameters.binary_data_size"
    assert "only 20 more" in error.message


def test_a_binary_size_that_disagrees_with_the_shape_is_refused() -> None:
    header = json_request(
        {"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
    )

    error = invalid(header + b"\x00" * 4, len(header))

    assert error.context["field"] == "inputs[0].parameters.binary_data_size"
    assert "8 bytes" in error.message


def test_bytes_left_after_the_last_binary_input_are_refused() -> None:
    body, header_length = client_request({"x": (NUMERIC["FP32"], "FP32", True)})

    assert invalid(body + b"\x00", header_length).context["field"] == "body"


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (b"\x00\x00\x00", "inputs[0].parameters.binary_data_size"),  # no room for 2 prefixes
        (struct.pack("<I", 9) + b"abcd" + b"\x00" * 4, "inputs[0].parameters.binary_data_size"),
        (
            struct.pack("<I", 1) + b"a" + struct.pack("<I", 0) + b"zz",
            "inputs[0].parameters.binary_data_size",
        ),
    ],
    ids=["too-short", "element-overruns", "trailing-bytes"],
)
def test_malformed_binary_bytes_elements_are_refused(payload: bytes, fields: str) -> None:
    header = json_request(
        {
            "name": "s",
            "shape": [2],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": len(payload)},
        }
    )

    assert invalid(header + payload, len(header)).context["field"] == fields


@pytest.mark.parametrize(
    ("tensor", "field"),
    [
        ({"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}, "inputs[0].datatype"),
        ({"name": "x", "shape": [1], "datatype": "BF16", "data": [1]}, "inputs[0].datatype"),
        ({"name": "x", "shape": [1], "datatype": 7, "data": [1]}, "inputs[0].datatype"),
        ({"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}, "inputs[0].data"),
        ({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2]}, "inputs[0].data"),
        ({"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}, "inputs[0].shape"),
        ({"name": "x", "shape": [True], "datatype": "FP32", "data": [1]}, "inputs[0].shape"),
        ({"name": "x", "shape": "1", "datatype": "FP32", "data": [1]}, "inputs[0].shape"),
        ({"name": "x", "shape": [1], "datatype": "FP32", "data": ["1"]}, "inputs[0].data"),
        ({"name": "x", "shape": [1], "datatype": "FP32", "data": [None]}, "inputs[0].data"),
        ({"name": "x", "shape": [1], "datatype": "FP32", "data": 1.0}, "inputs[0].data"),
        ({"name": "x", "shape": [1], "datatype": "FP16", "data": [70000]}, "inputs[0].data"),
        ({"name": "x", "shape": [1], "datatype": "FP32", "data": [1e39]}, "inputs[0].data"),
        ({"name": "x", "shape": [1], "datatype": "INT32", "data": [1.5]}, "inputs[0].data"),
        ({"name": "x", "shape": [1], "datatype": "INT32", "data": [2**31]}, "inputs[0].data"),
        ({"name": "x", "shape": [1], "datatype": "UINT8", "data": [-1]}, "inputs[0].data"),
        ({"name": "x", "shape": [1], "datatype": "UINT64", "data": [2**64]}, "inputs[0].data"),
        ({"name": "x", "shape": [2], "datatype": "INT64", "data": [2**63, -1]}, "inputs[0].data"),
        ({"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}, "inputs[0].data"),
        ({"name": "x", "shape": [3], "datatype": "INT8", "data": [[1, 2], [3]]}, "inputs[0].data"),
        ({"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}, "inputs[0].data"),
        ({"name": "x", "shape": [2], "datatype": "BYTES", "data": [["a"], "b"]}, "inputs[0].data"),
        ({"name": "", "shape": [1], "datatype": "FP32", "data": [1]}, "inputs[0].name"),
        ({"shape": [1], "datatype": "FP32", "data": [1]}, "inputs[0].name"),
        ({"name": "x", "shape": [1], "datatype": "FP32"}, "inputs[0].data"),
        (
            {"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": []},
            "inputs[0].parameters",
        ),
        (
            {
                "name": "x",
                "shape": [1],
                "datatype": "FP32",
                "parameters": {"shared_memory_region": "r"},
            },
            "inputs[0].parameters.shared_memory_region",
        ),
        (
            {
                "name": "x",
                "shape": [1],
                "datatype": "FP32",
                "data": [1],
                "parameters": {"binary_data_size": 4},
            },
            "inputs[0].data",
        ),
        (
            {
                "name": "x",
                "shape": [1],
                "datatype": "FP32",
                "parameters": {"binary_data_size": "4"},
            },
            "inputs[0].parameters.binary_data_size",
        ),
    ],
)
def test_malformed_json_inputs_name_the_field(tensor: dict[str, Any], field: str) -> None:
    assert invalid(json_request(tensor)).context["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b"\xff\xfe", "body"),
        (b"{}", "inputs"),
        (b'{"inputs": []}', "inputs"),
        (b'{"inputs": [1]}', "inputs[0]"),
        (b'{"id": 3, "inputs": []}', "id"),
        (
            b'{"parameters": {"binary_data_output": 1}, "inputs": []}',
            "parameters.binary_data_output",
        ),
        (b'{"parameters": 1, "inputs": []}', "parameters"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},'
            b' {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            "inputs[1].name",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": [{"name": 1}]}',
            "outputs[0].name",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": [{"name": "p", "parameters": {"binary_data": "yes"}}]}',
            "outputs[0].parameters.binary_data",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": [{"name": "p", "parameters": {"classification": 2}}]}',
            "outputs[0].parameters.classification",
        ),
    ],
)
def test_malformed_requests_name_the_field(body: bytes, field: str) -> None:
    assert invalid(body).context["field"] == field


def test_a_header_that_is_not_json_is_refused() -> None:
    body, header_length = client_request({"x": (NUMERIC["FP32"], "FP32", True)})
    assert header_length is not None

    assert invalid(body, header_length - 1).context["field"] == "body"


@st.composite
def client_bodies(draw: st.DrawFn) -> tuple[bytes, int | None]:
    arrays: dict[str, tuple[np.ndarray, str, bool]] = {}
    for i in range(draw(st.integers(1, 3))):
        datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
        source = STRINGS if datatype == "BYTES" else NUMERIC[datatype]
        arrays[f"in{i}"] = (source, datatype, draw(st.booleans()))
    return client_request(arrays)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        # Random bytes with a random header length.
        st.tuples(st.binary(max_size=200), st.none() | st.integers(-5, 250)),
        # Valid client bodies, truncated, extended or with one byte changed.
        st.tuples(
            client_bodies(), st.integers(0, 400), st.integers(0, 255), st.integers(-3, 3)
        ).map(lambda t: _mutate(t[0], t[1], t[2], t[3])),
        # Random JSON in the places the protocol gives meaning to.
        st.tuples(
            st.fixed_dictionaries(
                {
                    "name": json_values,
                    "shape": json_values | st.lists(st.integers(-2, 4), max_size=3),
                    "datatype": json_values | st.sampled_from([*NUMERIC, "BYTES"]),
                    "data": json_values,
                    "parameters": json_values
                    | st.fixed_dictionaries(
                        {"binary_data_size": st.integers(-2, 40) | json_values}
                    ),
                }
            ),
            st.binary(max_size=40),
            json_values,
        ).map(lambda t: _with_binary(t[0], t[1], t[2])),
    )
)
def test_any_malformed_body_raises_only_invalid_input(case: tuple[bytes, int | None]) -> None:
    body, header_length = case
    try:
        request = decode_infer_request(body, header_length)
    except InvalidInputError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.context.get("field")
        return
    # What decodes is consistent: every tensor holds the elements its shape says.
    for tensor in request.inputs:
        assert tensor.data.shape == tensor.shape


def _mutate(
    request: tuple[bytes, int | None], position: int, value: int, length_delta: int
) -> tuple[bytes, int | None]:
    body, header_length = request
    data = bytearray(body)
    if data:
        data[position % len(data)] = value
    if position % 3 == 0:
        data = data[: position % (len(data) + 1)]
    elif position % 3 == 1:
        data += bytes([value]) * (position % 7)
    return bytes(data), None if header_length is None else header_length + length_delta


def _with_binary(tensor: dict[str, Any], payload: bytes, outputs: Any) -> tuple[bytes, int | None]:
    header = json.dumps({"inputs": [tensor], "outputs": outputs}).encode()
    return header + payload, len(header)


# -- responses -------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", sorted(NUMERIC))
def test_every_numeric_datatype_encodes_for_the_client(datatype: str, binary: bool) -> None:
    array = NUMERIC[datatype]

    body, headers = encode_infer_response(
        "churn", 3, "req-1", [Tensor.from_numpy("y", array)], binary=binary
    )

    assert (HEADER_LENGTH in headers) == binary
    result = client_parse(body, headers)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "churn",
        "3",
        "req-1",
    )
    output = result.as_numpy("y")
    assert output.dtype == array.dtype
    np.testing.assert_array_equal(output, array)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_encode_for_the_client(binary: bool) -> None:
    body, headers = encode_infer_response(
        "m", None, None, [Tensor.from_numpy("s", STRINGS)], binary=binary
    )

    output = client_parse(body, headers).as_numpy("s")

    assert output.shape == (2, 2)
    decoded = [[v if isinstance(v, bytes) else v.encode() for v in row] for row in output.tolist()]
    assert decoded == STRINGS.tolist()
    assert "id" not in client_parse(body, headers).get_response()


def test_bytes_that_are_not_utf8_go_in_binary_even_when_json_was_asked() -> None:
    body, headers = encode_infer_response(
        "m", 1, None, [Tensor.from_numpy("raw", RAW_BYTES)], binary=False
    )

    assert HEADER_LENGTH in headers
    assert client_parse(body, headers).as_numpy("raw").tolist() == RAW_BYTES.tolist()


def test_a_response_mixes_binary_and_json_outputs() -> None:
    outputs = [
        Tensor.from_numpy("predict", np.array([1, 0, 1])),
        Tensor.from_numpy("predict_proba", np.array([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])),
        Tensor.from_numpy("label", np.array(["yes", "no", "yes"])),
    ]

    body, headers = encode_infer_response(
        "m", "2", None, outputs, binary={"predict_proba", "label"}
    )

    assert headers["Content-Type"] == "application/octet-stream"
    result = client_parse(body, headers)
    assert "data" in result.get_output("predict")
    assert result.get_output("predict_proba")["parameters"]["binary_data_size"] == 48
    np.testing.assert_array_equal(result.as_numpy("predict"), [1, 0, 1])
    np.testing.assert_array_equal(result.as_numpy("predict_proba"), outputs[1].data)
    assert result.as_numpy("label").tolist() == [b"yes", b"no", b"yes"]


def test_a_json_only_response_is_plain_json() -> None:
    body, headers = encode_infer_response(
        "m", "1", None, [Tensor.from_numpy("predict", np.array([1.5]))], binary=set()
    )

    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(body)["outputs"][0] == {
        "name": "predict",
        "datatype": "FP64",
        "shape": [1],
        "data": [1.5],
    }


def test_requested_outputs_are_selected_in_the_clients_order() -> None:
    body, header_length = client_request(
        {"x": (NUMERIC["FP32"], "FP32", True)},
        outputs=[triton.InferRequestedOutput("b"), triton.InferRequestedOutput("a")],
    )
    request = decode_infer_request(body, header_length)
    produced = [Tensor.from_numpy("a", np.array([1])), Tensor.from_numpy("b", np.array([2]))]

    assert [t.name for t in request.select_outputs(produced)] == ["b", "a"]
    with pytest.raises(InvalidInputError) as caught:
        request.select_outputs(produced[:1])
    assert caught.value.context["field"] == "outputs[0].name"


# -- tables, predictions and metadata --------------------------------------------------


def test_a_matrix_input_maps_onto_the_signature_columns() -> None:
    matrix = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
    body, header_length = client_request({"input": (matrix, "FP32", True)})
    request = decode_infer_request(body, header_length)

    table = table_from_inputs(request.inputs, ["age", "income"])

    assert table.column_names == ["age", "income"]
    assert table.column("income").to_pylist() == [2.0, 4.0, 6.0]
    assert str(table.schema.field("age").type) == "float"


def test_one_input_per_column_makes_one_column_each() -> None:
    body, header_length = client_request(
        {
            "age": (np.array([31, 45], dtype=np.int64), "INT64", True),
            "plan": (np.array([b"pro", b"free"], dtype=object), "BYTES", False),
            "score": (np.array([[0.5], [0.25]]), "FP64", True),
        }
    )
    request = decode_infer_request(body, header_length)

    table = table_from_inputs(request.inputs, None)

    assert table.to_pydict() == {"age": [31, 45], "plan": ["pro", "free"], "score": [0.5, 0.25]}


@pytest.mark.parametrize(
    ("tensors", "columns", "field"),
    [
        ([Tensor.from_numpy("m", np.ones((2, 3)))], None, "inputs[0].shape"),
        ([Tensor.from_numpy("m", np.ones((2, 3)))], ["a", "b"], "inputs[0].shape"),
        ([Tensor.from_numpy("m", np.array([["a", "b"]]))], ["a", "b"], "inputs[0].datatype"),
        (
            [Tensor.from_numpy("a", np.ones(2)), Tensor.from_numpy("b", np.ones(3))],
            None,
            "inputs[1].shape",
        ),
        (
            [Tensor.from_numpy("a", np.ones(2)), Tensor.from_numpy("b", np.ones((2, 2)))],
            None,
            "inputs[1].shape",
        ),
        ([], None, "inputs"),
    ],
)
def test_inputs_that_are_no_table_name_the_field(
    tensors: list[Tensor], columns: list[str] | None, field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        table_from_inputs(tensors, columns)
    assert caught.value.context["field"] == field


def test_outputs_from_predictions() -> None:
    (labels,) = outputs_from_predictions(np.array([0, 1, 1]))
    (proba,) = outputs_from_predictions(np.array([[0.1, 0.9], [0.5, 0.5]], dtype=np.float32))
    (column,) = outputs_from_predictions(np.array([[1.5], [2.5]]))
    (strings,) = outputs_from_predictions(["yes", "no"])
    named = outputs_from_predictions({"score": np.array([0.5]), "flag": np.array([True])})

    assert (labels.name, labels.datatype, labels.shape) == ("predict", "INT64", (3,))
    assert (proba.name, proba.datatype, proba.shape) == ("predict_proba", "FP32", (2, 2))
    assert (column.name, column.shape) == ("predict", (2,))
    assert (strings.datatype, strings.data.tolist()) == ("BYTES", [b"yes", b"no"])
    assert [(t.name, t.datatype) for t in named] == [("score", "FP64"), ("flag", "BOOL")]


def test_datatypes_of_numpy_and_arrow_types() -> None:
    assert datatype_of(np.zeros(1, dtype=">f4")) == "FP32"
    assert datatype_of(np.zeros(1, dtype=np.uint16)) == "UINT16"
    assert datatype_of(np.array(["a"])) == "BYTES"
    assert datatype_of(np.array([1], dtype="datetime64[s]")) == "BYTES"
    assert [datatype_for_arrow(t) for t in ("double", "float", "int64", "bool", "string")] == [
        "FP64",
        "FP32",
        "INT64",
        "BOOL",
        "BYTES",
    ]


def test_metadata_documents() -> None:
    assert server_metadata("0.4.0", ["binary_tensor_data"]) == {
        "name": "conveyor",
        "version": "0.4.0",
        "extensions": ["binary_tensor_data"],
    }
    assert model_metadata(
        "churn",
        [3, 4],
        "sklearn",
        [TensorMetadata("input", "FP32", (-1, 2))],
        [TensorMetadata("predict", "INT64")],
    ) == {
        "name": "churn",
        "versions": ["3", "4"],
        "platform": "sklearn",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }
