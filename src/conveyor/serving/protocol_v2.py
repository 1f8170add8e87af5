"""The Open Inference Protocol v2 (KServe v2, Triton HTTP): bodies to and from numpy arrays.

Pure functions, no web framework: the app hands over the body bytes and the
``Inference-Header-Content-Length`` header and gets named numpy arrays back;
it hands over output arrays and gets the body and headers to send.

Both forms of the protocol are read and written: plain JSON (``data`` flat
or nested, row-major) and the binary-data extension, where the JSON header
is followed by the raw tensors, each announced by
``parameters.binary_data_size``. Numeric tensors are little-endian; BOOL is
one byte per element; BYTES elements are each prefixed by their 4-byte
little-endian length.

Every malformed payload raises :class:`~conveyor.errors.InvalidInputError`
whose ``field`` names what was wrong (``inputs[0].shape``,
``Inference-Header-Content-Length``...), never anything else: the server
answers 400. ::

    request = decode_infer_request(body, parse_header_length(headers.get(HEADER_LENGTH)))
    table = table_from_inputs(request.inputs, signature.names)
    outputs = request.select_outputs(outputs_from_predictions(model.predict(table)))
    body, headers = encode_infer_response(
        "churn", "3", request.id, outputs, binary=request.binary_outputs()
    )

Decoded numeric arrays are zero-copy views of the request body (read-only).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

# numpy and orjson are imported at the top on purpose: every function here is
# on the request path, and this module is useless without them.
import numpy as np
import orjson

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy.typing as npt
    import pyarrow as pa

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "InferRequest",
    "RequestedOutput",
    "Tensor",
    "TensorMetadata",
    "datatype_for_arrow",
    "datatype_of",
    "decode_infer_request",
    "encode_infer_response",
    "model_metadata",
    "outputs_from_predictions",
    "parse_header_length",
    "server_metadata",
    "table_from_inputs",
]

#: The header that says how long the JSON part of a binary body is.
HEADER_LENGTH = "Inference-Header-Content-Length"

#: The v2 datatypes and their little-endian numpy dtypes (BYTES: object arrays of ``bytes``).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("|b1"),
    "UINT8": np.dtype("|u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("|i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype("O"),
}

_BY_NUMPY = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}
_LENGTH = struct.Struct("<I")
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
# numpy's limit on dimensions; a deeper shape is refused before it reaches numpy.
_MAX_DIMS = 32


@dataclass(frozen=True, slots=True)
class Tensor:
    """One named tensor: ``shape`` and ``datatype`` as the protocol says, ``data`` reshaped."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: npt.NDArray[Any]

    @classmethod
    def from_numpy(cls, name: str, array: Any, datatype: str | None = None) -> Tensor:
        """A tensor holding ``array``; the datatype follows its dtype unless given.

        Strings (and any other object) become BYTES, held as ``bytes``.
        """
        data = np.asarray(array)
        kind = datatype or datatype_of(data)
        if kind == "BYTES":
            data = _as_bytes_array(data)
        return cls(name, tuple(int(n) for n in data.shape), kind, data)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An entry of the request's ``outputs``; ``binary_data`` is None when not said."""

    name: str
    binary_data: bool | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded ``POST /v2/models/{name}/infer`` body."""

    id: str | None
    parameters: dict[str, Any]
    inputs: list[Tensor]
    outputs: list[RequestedOutput]
    #: ``parameters.binary_data_output``: every output in binary unless an output says otherwise.
    binary_data_output: bool

    def binary_outputs(self) -> set[str] | bool:
        """Which outputs to send in binary: the ``binary=`` of :func:`encode_infer_response`."""
        if not self.outputs:
            return self.binary_data_output
        return {
            o.name
            for o in self.outputs
            if (self.binary_data_output if o.binary_data is None else o.binary_data)
        }

    def select_outputs(self, produced: Sequence[Tensor]) -> list[Tensor]:
        """The outputs the client asked for, in its order (all of them if it named none)."""
        if not self.outputs:
            return list(produced)
        by_name = {t.name: t for t in produced}
        selected = []
        for i, wanted in enumerate(self.outputs):
            tensor = by_name.get(wanted.name)
            if tensor is None:
                raise InvalidInputError(
                    f"unknown output {wanted.name!r}; the model produces "
                    f"{', '.join(by_name) or 'nothing'}",
                    field=f"outputs[{i}].name",
                )
            selected.append(tensor)
        return selected


class TensorMetadata(NamedTuple):
    """An input or output in model metadata; -1 stands for the batch axis."""

    name: str
    datatype: str
    shape: tuple[int, ...] = (-1,)


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as an int (None when absent)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidInputError(
            f"{HEADER_LENGTH} must be a non-negative integer, got {value[:40]!r}",
            field=HEADER_LENGTH,
        )
    return int(text)


def decode_infer_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode an inference request; ``header_length`` is the JSON part's length (None: all).

    Raises :class:`InvalidInputError` naming the field for any malformed body.
    """
    if type(body) is not bytes:
        body = bytes(body)
    size = len(body)
    if header_length is None:
        header_end = size
    else:
        if type(header_length) is not int or header_length < 0:
            raise InvalidInputError(
                f"{HEADER_LENGTH} must be a non-negative integer", field=HEADER_LENGTH
            )
        if header_length > size:
            raise InvalidInputError(
                f"{HEADER_LENGTH} is {header_length} but the body has only {size} bytes",
                field=HEADER_LENGTH,
            )
        header_end = header_length
    view = memoryview(body)
    try:
        header = orjson.loads(view[:header_end] if header_end < size else body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(
            f"the request header is not valid JSON: {exc}", field="body"
        ) from exc
    if type(header) is not dict:
        raise InvalidInputError("the request must be a JSON object", field="body")

    request_id = header.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInputError("id must be a string", field="id")
    parameters = _object(header.get("parameters"), "parameters")
    binary_output = parameters.get("binary_data_output", False)
    if type(binary_output) is not bool:
        raise InvalidInputError(
            "parameters.binary_data_output must be true or false",
            field="parameters.binary_data_output",
        )

    raw_inputs = header.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise InvalidInputError("inputs must be a non-empty list of tensors", field="inputs")
    inputs: list[Tensor] = []
    names: set[str] = set()
    offset = header_end  # where the next binary tensor starts in the body
    for i, raw in enumerate(raw_inputs):
        tensor, offset = _decode_input(raw, f"inputs[{i}]", body, offset, size)
        if tensor.name in names:
            raise InvalidInputError(
                f"input {tensor.name!r} is given twice", field=f"inputs[{i}].name"
            )
        names.add(tensor.name)
        inputs.append(tensor)
    if offset != size:
        raise InvalidInputError(
            f"the body holds {size - offset} bytes after the last binary input; "
            f"the inputs' binary_data_size does not account for them",
            field="body",
        )
    return InferRequest(
        id=request_id,
        parameters=parameters,
        inputs=inputs,
        outputs=_decode_outputs(header.get("outputs")),
        binary_data_output=binary_output,
    )


def encode_infer_response(
    model_name: str,
    model_version: str | int | None,
    id: str | None,
    outputs: Sequence[Tensor],
    *,
    binary: set[str] | bool,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (``Content-Type``, and the header length if binary).

    ``binary``: every output (True), none (False) or those named. A BYTES
    output that is not UTF-8 is sent in binary whatever ``binary`` says,
    since JSON cannot carry it.
    """
    entries: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for tensor in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        as_binary = binary if isinstance(binary, bool) else tensor.name in binary
        json_data = None if as_binary else _json_data(tensor)
        if json_data is None:
            raw = _binary_data(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            entry["data"] = json_data
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = str(model_version)
    if id is not None:
        response["id"] = id
    response["outputs"] = entries
    try:
        head = orjson.dumps(response, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError:  # an array orjson cannot write natively
        for entry in entries:
            if isinstance(entry.get("data"), np.ndarray):
                entry["data"] = entry["data"].tolist()
        head = orjson.dumps(response)
    if not buffers:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *buffers]), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(head)),
    }


def server_metadata(version: str, extensions: Sequence[str]) -> dict[str, Any]:
    """The body of ``GET /v2``."""
    return {"name": "conveyor", "version": version, "extensions": list(extensions)}


def model_metadata(
    name: str,
    versions: Iterable[str | int],
    platform: str,
    inputs: Iterable[TensorMetadata],
    outputs: Iterable[TensorMetadata],
) -> dict[str, Any]:
    """The body of ``GET /v2/models/{name}[/versions/{v}]``."""

    def describe(specs: Iterable[TensorMetadata]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": platform,
        "inputs": describe(inputs),
        "outputs": describe(outputs),
    }


def datatype_of(array: Any) -> str:
    """The v2 datatype of a numpy array (strings and objects: BYTES)."""
    dtype = np.asarray(array).dtype
    if dtype.kind in "biuf":
        found = _BY_NUMPY.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
        if found is not None:
            return found
    return "BYTES"


_ARROW_TYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "halffloat": "FP16",
    "float": "FP32",
    "double": "FP64",
}


def datatype_for_arrow(type_name: str) -> str:
    """The v2 datatype for a signature column's Arrow type name (anything else: BYTES)."""
    return _ARROW_TYPES.get(type_name, "BYTES")


def table_from_inputs(inputs: Sequence[Tensor], columns: Sequence[str] | None) -> pa.Table:
    """The feature table a model expects, from v2 inputs.

    Either one 2-D input of shape ``[n, k]`` whose columns are the
    signature's ``columns`` in order, or one input per column, each of
    shape ``[n]`` (or ``[n, 1]``), named as the column. Checking names and
    types against the signature is :meth:`Signature.enforce`'s job.
    """
    import pyarrow as pa

    if not inputs:
        raise InvalidInputError("inputs must hold at least one tensor", field="inputs")
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] != 1:
        return _table_from_matrix(inputs[0], columns)
    arrays = []
    rows: int | None = None
    for i, tensor in enumerate(inputs):
        shape = tensor.shape
        if len(shape) != 1 and not (len(shape) == 2 and shape[1] == 1):
            raise InvalidInputError(
                f"input {tensor.name!r} has shape {list(shape)}; send one [n, k] matrix "
                "or one [n] input per column",
                field=f"inputs[{i}].shape",
            )
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise InvalidInputError(
                f"input {tensor.name!r} has {shape[0]} rows; {inputs[0].name!r} has {rows}",
                field=f"inputs[{i}].shape",
            )
        arrays.append(_arrow_column(tensor.data.reshape(-1), tensor.datatype))
    return pa.table(arrays, names=[t.name for t in inputs])


def outputs_from_predictions(pred: Any) -> list[Tensor]:
    """Output tensors from what a model's predict returned.

    A mapping gives one output per key. Otherwise a 1-D array (or ``[n, 1]``)
    is ``predict``, a 2-D one ``predict_proba`` (class probabilities);
    strings become BYTES.
    """
    if isinstance(pred, Mapping):
        return [Tensor.from_numpy(str(name), value) for name, value in pred.items()]
    if hasattr(pred, "to_numpy"):  # pandas and polars
        pred = pred.to_numpy()
    data = np.asarray(pred)
    if data.ndim == 0:
        data = data.reshape(1)
    elif data.ndim == 2 and data.shape[1] == 1:
        data = data.reshape(-1)
    name = "predict_proba" if data.ndim == 2 else "predict"
    return [Tensor.from_numpy(name, data)]


# -- decoding ------------------------------------------------------------------


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise InvalidInputError(f"{where} must be a JSON object", field=where)
    return value


def _decode_outputs(raw: Any) -> list[RequestedOutput]:
    if raw is None:
        return []
    if type(raw) is not list:
        raise InvalidInputError("outputs must be a list", field="outputs")
    outputs = []
    for i, entry in enumerate(raw):
        where = f"outputs[{i}]"
        if type(entry) is not dict:
            raise InvalidInputError(f"{where} must be a JSON object", field=where)
        name = entry.get("name")
        if type(name) is not str:
            raise InvalidInputError(f"{where}.name must be a string", field=f"{where}.name")
        parameters = _object(entry.get("parameters"), f"{where}.parameters")
        binary = parameters.get("binary_data")
        if binary is not None and type(binary) is not bool:
            raise InvalidInputError(
                f"{where}.parameters.binary_data must be true or false",
                field=f"{where}.parameters.binary_data",
            )
        if parameters.get("classification") is not None:
            # Answering with raw scores to a client that asked for class labels would be wrong.
            raise InvalidInputError(
                "the classification extension is not supported",
                field=f"{where}.parameters.classification",
            )
        outputs.append(RequestedOutput(name, binary, parameters))
    return outputs


def _decode_input(raw: Any, where: str, body: bytes, offset: int, size: int) -> tuple[Tensor, int]:
    if type(raw) is not dict:
        raise InvalidInputError(f"{where} must be a JSON object", field=where)
    name = raw.get("name")
    if type(name) is not str or not name:
        raise InvalidInputError(f"{where}.name must be a non-empty string", field=f"{where}.name")
    datatype = raw.get("datatype")
    dtype = DATATYPES.get(datatype) if type(datatype) is str else None
    if dtype is None or type(datatype) is not str:
        raise InvalidInputError(
            f"{where}.datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}",
            field=f"{where}.datatype",
        )
    shape = _shape(raw.get("shape"), f"{where}.shape")
    count = math.prod(shape)
    parameters = _object(raw.get("parameters"), f"{where}.parameters")
    binary_size = parameters.get("binary_data_size")
    data = raw.get("data")

    if binary_size is None:
        if "shared_memory_region" in parameters:
            raise InvalidInputError(
                "the shared-memory extension is not supported",
                field=f"{where}.parameters.shared_memory_region",
            )
        if type(data) is not list:
            raise InvalidInputError(
                f"{where}.data must be a list (or the tensor sent as binary data)",
                field=f"{where}.data",
            )
        if datatype == "BYTES":
            array = _bytes_from_json(data, f"{where}.data")
        else:
            array = _numeric_from_json(data, datatype, dtype, f"{where}.data")
        if array.size != count:
            raise InvalidInputError(
                f"{where}.data holds {array.size} values; shape {shape} needs {count}",
                field=f"{where}.data",
            )
        return Tensor(name, shape, datatype, _reshape(array, shape, f"{where}.shape")), offset

    if data is not None:
        raise InvalidInputError(
            f"{where} has both data and parameters.binary_data_size", field=f"{where}.data"
        )
    if type(binary_size) is not int or binary_size < 0:
        raise InvalidInputError(
            f"{where}.parameters.binary_data_size must be a non-negative integer",
            field=f"{where}.parameters.binary_data_size",
        )
    end = offset + binary_size
    if end > size:
        raise InvalidInputError(
            f"{where} declares {binary_size} bytes of binary data; the body holds only "
            f"{size - offset} more",
            field=f"{where}.parameters.binary_data_size",
        )
    if datatype == "BYTES":
        array = _bytes_from_binary(body, offset, end, count, f"{where}.parameters")
    else:
        expected = count * dtype.itemsize
        if binary_size != expected:
            raise InvalidInputError(
                f"{where} is {datatype} of shape {shape}: {expected} bytes, but "
                f"binary_data_size is {binary_size}",
                field=f"{where}.parameters.binary_data_size",
            )
        if count == 0:
            array = np.empty(0, dtype)
        elif datatype == "BOOL":
            # Any non-zero byte is true; viewing arbitrary bytes as bool would not normalise them.
            array = np.frombuffer(body, np.uint8, count, offset) != 0
        else:
            array = np.frombuffer(body, dtype, count, offset)
    return Tensor(name, shape, datatype, _reshape(array, shape, f"{where}.shape")), end


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    if type(raw) is not list or len(raw) > _MAX_DIMS:
        raise InvalidInputError(
            f"{where} must be a list of at most {_MAX_DIMS} non-negative integers", field=where
        )
    for n in raw:
        if type(n) is not int or n < 0:
            raise InvalidInputError(
                f"{where} must hold non-negative integers, got {n!r}", field=where
            )
    return tuple(raw)


def _reshape(array: npt.NDArray[Any], shape: tuple[int, ...], where: str) -> npt.NDArray[Any]:
    try:
        return array.reshape(shape)
    except ValueError as exc:  # e.g. a zero-size shape too large for numpy's index type
        raise InvalidInputError(f"{where} {list(shape)} is not usable: {exc}", field=where) from exc


def _numeric_from_json(
    data: list[Any], datatype: str, dtype: np.dtype[Any], where: str
) -> npt.NDArray[Any]:
    # One C-level conversion with the dtype numpy infers, then a checked cast:
    # converting straight to the target dtype would truncate 1.5 to 1, read
    # null as NaN and wrap out-of-range integers.
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidInputError(
            f"{where} is not a (nested) list of {datatype} values: {exc}", field=where
        ) from exc
    if raw.size == 0:
        return np.empty(0, dtype)
    kind = raw.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise InvalidInputError(f"{where} must hold true/false values", field=where)
        return raw
    if dtype.kind in "iu":
        if kind not in "iu":
            return _big_integers(data, datatype, dtype, where)
        info = np.iinfo(dtype)
        if int(raw.min()) < info.min or int(raw.max()) > info.max:
            raise InvalidInputError(
                f"{where} holds values outside the range of {datatype}", field=where
            )
        return raw.astype(dtype, copy=False)
    if kind not in "iuf":
        raise InvalidInputError(f"{where} must hold {datatype} numbers", field=where)
    with np.errstate(over="ignore"):
        array = raw.astype(dtype, copy=False)
    if datatype != "FP64" and not np.isfinite(array).all():
        raise InvalidInputError(
            f"{where} holds values outside the range of {datatype}", field=where
        )
    return array


def _big_integers(
    data: list[Any], datatype: str, dtype: np.dtype[Any], where: str
) -> npt.NDArray[Any]:
    """The slow path: numpy reads integers beyond int64 mixed with others as floats."""
    try:
        flat = np.asarray(data, dtype=object).reshape(-1)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidInputError(f"{where} must hold {datatype} integers", field=where) from exc
    if not all(type(v) is int for v in flat):
        raise InvalidInputError(f"{where} must hold {datatype} integers", field=where)
    info = np.iinfo(dtype)
    if min(flat) < info.min or max(flat) > info.max:
        raise InvalidInputError(
            f"{where} holds values outside the range of {datatype}", field=where
        )
    return np.array(flat.tolist(), dtype=dtype)


def _bytes_from_json(data: list[Any], where: str) -> npt.NDArray[Any]:
    try:
        raw = np.asarray(data, dtype=object).reshape(-1)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidInputError(
            f"{where} is not a (nested) list of strings: {exc}", field=where
        ) from exc
    out = np.empty(raw.size, dtype=object)
    for i, value in enumerate(raw):
        if type(value) is not str:
            raise InvalidInputError(
                f"{where} must hold strings for BYTES, found {type(value).__name__}",
                field=where,
            )
        out[i] = value.encode()
    return out


def _bytes_from_binary(
    body: bytes, start: int, end: int, count: int, where: str
) -> npt.NDArray[Any]:
    # Elements have their own lengths, so this one walks element by element.
    if count * 4 > end - start:
        raise InvalidInputError(
            f"{where}.binary_data_size is {end - start} bytes, too short for {count} "
            "length-prefixed BYTES elements",
            field=f"{where}.binary_data_size",
        )
    out = np.empty(count, dtype=object)
    unpack = _LENGTH.unpack_from
    position = start
    for i in range(count):
        if position + 4 > end:
            raise InvalidInputError(
                f"{where}: BYTES element {i} has no length prefix (the data ends)",
                field=f"{where}.binary_data_size",
            )
        (length,) = unpack(body, position)
        position += 4
        if position + length > end:
            raise InvalidInputError(
                f"{where}: BYTES element {i} declares {length} bytes; only {end - position} remain",
                field=f"{where}.binary_data_size",
            )
        out[i] = body[position : position + length]
        position += length
    if position != end:
        raise InvalidInputError(
            f"{where}.binary_data_size is {end - start} bytes but {count} BYTES elements "
            f"use {position - start}",
            field=f"{where}.binary_data_size",
        )
    return out


# -- encoding ------------------------------------------------------------------


def _as_bytes_array(data: npt.NDArray[Any]) -> npt.NDArray[Any]:
    flat = data.reshape(-1)
    out = np.empty(flat.size, dtype=object)
    for i, value in enumerate(flat):
        if isinstance(value, bytes):
            out[i] = value
        elif isinstance(value, str):
            out[i] = value.encode()
        else:
            out[i] = str(value).encode()
    return out.reshape(data.shape)


def _json_data(tensor: Tensor) -> Any:
    """The ``data`` of a JSON output (flat), or None when it can only go in binary."""
    if tensor.datatype == "BYTES":
        try:
            return [v.decode() if isinstance(v, bytes) else str(v) for v in tensor.data.reshape(-1)]
        except UnicodeDecodeError:
            return None
    dtype = DATATYPES[tensor.datatype]
    # ravel() gives the contiguous, native-order array orjson writes directly.
    return np.asarray(tensor.data, dtype=dtype.newbyteorder("=")).ravel()


def _binary_data(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        pack = _LENGTH.pack
        parts = []
        for value in tensor.data.reshape(-1):
            raw = value if isinstance(value, bytes) else str(value).encode()
            parts.append(pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.asarray(tensor.data, dtype=DATATYPES[tensor.datatype]).tobytes()


# -- tables --------------------------------------------------------------------


def _table_from_matrix(tensor: Tensor, columns: Sequence[str] | None) -> pa.Table:
    import pyarrow as pa

    if columns is None:
        raise InvalidInputError(
            f"input {tensor.name!r} is a matrix, but the model has no signature to name its "
            "columns; send one [n] input per column",
            field="inputs[0].shape",
        )
    if tensor.shape[1] != len(columns):
        raise InvalidInputError(
            f"input {tensor.name!r} has {tensor.shape[1]} columns; the model expects "
            f"{len(columns)} ({', '.join(columns)})",
            field="inputs[0].shape",
        )
    if tensor.datatype == "BYTES":
        raise InvalidInputError(
            f"input {tensor.name!r}: a matrix must be numeric; send string features as one "
            "[n] BYTES input per column",
            field="inputs[0].datatype",
        )
    # Transposed once into one contiguous buffer that Arrow takes without a copy; each
    # column is a zero-copy slice of it (one pa.array per column costs twice as much).
    rows = tensor.shape[0]
    flat = pa.array(np.ascontiguousarray(tensor.data.T).reshape(-1))
    return pa.Table.from_arrays(
        [flat.slice(j * rows, rows) for j in range(len(columns))], names=list(columns)
    )


def _arrow_column(values: npt.NDArray[Any], datatype: str) -> pa.Array:
    import pyarrow as pa

    if datatype != "BYTES":
        return pa.array(values)
    try:
        return pa.array(values, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not UTF-8: keep the raw bytes
        return pa.array(values, type=pa.binary())
