"""The native JSON API: a prediction request body to an Arrow table, predictions to JSON.

A request holds the rows either as records or as columns, plus optional
``attributes`` (matched by the route's flag rules) and an ``id``::

    {"records": [{"age": 31, "plan": "pro"}, {"age": 45, "plan": "free"}]}
    {"columns": {"age": [31, 45], "plan": ["pro", "free"]}, "attributes": {"tier": "beta"}}

Every malformed body raises :class:`~conveyor.errors.InvalidInputError`
whose ``field`` names what was wrong (``records[3]``, ``columns.age``...). ::

    request = decode_native_request(body)
    table = signature.enforce(request.table)
    body = encode_predictions(
        model.predict(table), model="churn", version=3, arm="champion",
        request_id="r-1", cached=False,
    )
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["NativeRequest", "decode_native_request", "encode_predictions"]

_KEYS = frozenset({"records", "columns", "attributes", "id"})
_NONE = type(None)
_SCALARS = (str, int, float, bool)
# JSON names for Python types, for messages.
_JSON_TYPES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """A decoded native request: the rows, the routing attributes and the client's id."""

    table: pa.Table
    attributes: dict[str, str | int | float | bool] = field(default_factory=dict)
    id: str | None = None


def decode_native_request(body: bytes) -> NativeRequest:
    """Decode ``{"records": [...]}`` or ``{"columns": {...}}`` into a :class:`NativeRequest`."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the body is not valid JSON: {exc}", field="body") from exc
    if type(document) is not dict:
        raise InvalidInputError(
            'the body must be a JSON object holding "records" or "columns"', field="body"
        )
    unknown = document.keys() - _KEYS
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInputError(
            f"unknown key {name!r}; the body holds records or columns, attributes and id",
            field=name,
        )
    has_records, has_columns = "records" in document, "columns" in document
    if has_records == has_columns:
        raise InvalidInputError(
            'the body must hold exactly one of "records" and "columns"'
            + (", not both" if has_records else ""),
            field="records",
        )
    if has_records:
        names, values = _from_records(document["records"])
    else:
        names, values = _from_columns(document["columns"])

    import pyarrow as pa

    arrays = [
        _array(v, f"{'records' if has_records else 'columns'}.{n}")
        for n, v in zip(names, values, strict=True)
    ]
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInputError("id must be a string", field="id")
    return NativeRequest(
        pa.table(arrays, names=names), _attributes(document.get("attributes")), request_id
    )


def encode_predictions(
    pred: Any,
    *,
    model: str,
    version: int | str,
    arm: str | None,
    request_id: str,
    cached: bool,
) -> bytes:
    """The response body: predictions (a list, one per row) and where they came from."""
    return orjson.dumps(
        {
            "predictions": _plain(pred),
            "model": model,
            "version": version,
            "arm": arm,
            "request_id": request_id,
            "cached": cached,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
        default=_default,
    )


def _from_records(records: Any) -> tuple[list[str], list[list[Any]]]:
    if type(records) is not list or not records:
        raise InvalidInputError("records must be a non-empty list of objects", field="records")
    for i, record in enumerate(records):
        if type(record) is not dict:
            raise InvalidInputError(
                f"records[{i}] must be an object, got {_json_type(record)}",
                field=f"records[{i}]",
            )
    first = records[0].keys()
    if all(r.keys() == first for r in records):
        # The usual case: every record has the same keys; map() stays in C.
        names = list(first)
        values = [list(map(itemgetter(n), records)) for n in names]
    else:
        # Keys missing from some records read as null (the signature refuses nulls it never saw).
        names = list(dict.fromkeys(k for r in records for k in r))
        values = [[r.get(n) for r in records] for n in names]
    if not names:
        raise InvalidInputError("the records hold no field", field="records")
    return names, values


def _from_columns(columns: Any) -> tuple[list[str], list[list[Any]]]:
    if type(columns) is not dict or not columns:
        raise InvalidInputError(
            "columns must be a non-empty object of name -> list of values", field="columns"
        )
    names = list(columns)
    values = list(columns.values())
    rows: int | None = None
    for name, column in zip(names, values, strict=True):
        if type(column) is not list:
            raise InvalidInputError(
                f"columns.{name} must be a list of values, got {_json_type(column)}",
                field=f"columns.{name}",
            )
        if rows is None:
            rows = len(column)
            if rows == 0:
                raise InvalidInputError(f"columns.{name} is empty", field=f"columns.{name}")
        elif len(column) != rows:
            raise InvalidInputError(
                f"columns.{name} has {len(column)} values; columns.{names[0]} has {rows}",
                field=f"columns.{name}",
            )
    return names, values


def _array(values: list[Any], where: str) -> pa.Array:
    import pyarrow as pa

    kinds = set(map(type, values))
    kinds.discard(_NONE)
    # int and float mix freely in JSON (1 and 1.5); any other mix is an error.
    if len(kinds) > 1 and kinds != {int, float}:
        found = ", ".join(sorted(_json_type_name(k) for k in kinds))
        raise InvalidInputError(f"{where} mixes value types ({found})", field=where)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError) as exc:
        raise InvalidInputError(f"{where} cannot be read as a column: {exc}", field=where) from exc


def _attributes(raw: Any) -> dict[str, str | int | float | bool]:
    if raw is None:
        return {}
    if type(raw) is not dict:
        raise InvalidInputError("attributes must be an object", field="attributes")
    for name, value in raw.items():
        if not isinstance(value, _SCALARS):
            raise InvalidInputError(
                f"attributes.{name} must be a string, number or boolean, got {_json_type(value)}",
                field=f"attributes.{name}",
            )
    return raw


def _json_type(value: Any) -> str:
    return _json_type_name(type(value))


def _json_type_name(kind: type) -> str:
    return "null" if kind is _NONE else _JSON_TYPES.get(kind, kind.__name__)


def _plain(pred: Any) -> Any:
    """``pred`` as something orjson writes: a list or a numpy array it serializes natively."""
    module = type(pred).__module__.split(".")[0]
    if module == "numpy":
        return pred if pred.dtype.kind in "biuf" else pred.tolist()
    if module == "pyarrow":
        return pred.to_pylist()
    if hasattr(pred, "to_numpy"):  # pandas, polars
        return _plain(pred.to_numpy())
    return pred


def _default(value: Any) -> Any:
    """What orjson cannot write by itself: numpy scalars and arrays it refused, bytes."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")
