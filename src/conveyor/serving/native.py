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

import functools
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.serving.dense import DenseRows

__all__ = ["NativeRequest", "decode_native_request", "encode_predictions"]

_KEYS = frozenset({"records", "columns", "attributes", "id"})
_NONE = type(None)
_NULL = frozenset({_NONE})
_NUMBERS = frozenset({int, float})
_EXACT = 2**53  # the largest integer a float64 holds exactly
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
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


class NativeRequest:
    """A decoded native request: the rows, the routing attributes and the client's id.

    The rows are checked (every column has values of one JSON type) when the
    body is decoded; the Arrow :attr:`table` is built on first use, and
    :meth:`rows_for` gives a version that takes float64 matrices the rows as a
    :class:`~conveyor.serving.dense.DenseRows` instead (serving/dense.py).
    """

    __slots__ = ("_prefix", "_table", "attributes", "columns", "id", "kinds", "names")

    def __init__(
        self,
        names: list[str],
        columns: list[list[Any]],
        kinds: list[frozenset[type]],
        prefix: str,
        attributes: dict[str, str | int | float | bool] | None = None,
        id: str | None = None,
    ) -> None:
        self.names = names
        self.columns = columns
        self.kinds = kinds  # per column: the Python types of its values (NoneType for nulls)
        self._prefix = prefix
        self._table: pa.Table | None = None
        self.attributes = attributes if attributes is not None else {}
        self.id = id

    @property
    def table(self) -> pa.Table:
        """The rows as an Arrow table (built once; InvalidInputError naming a bad column)."""
        if self._table is None:
            self._table = _table(self.names, self.columns, self.kinds, self._prefix)
        return self._table

    def rows_for(self, dense: tuple[str, ...] | None) -> pa.Table | DenseRows:
        """The rows for a version whose float64 inputs are ``dense`` (None: it has others).

        A :class:`DenseRows` when every value is a number and the columns are
        exactly ``dense`` (in any order); the Arrow :attr:`table` otherwise, which
        the signature then checks and converts as it always does.
        """
        if dense is None or len(dense) != len(self.names):
            return self.table
        for kinds, column in zip(self.kinds, self.columns, strict=True):
            if not kinds <= _NUMBERS or (int in kinds and not _exact_ints(column)):
                return self.table
        import numpy as np

        from conveyor.serving.dense import DenseRows

        if tuple(self.names) == dense:
            columns = self.columns
        else:
            where = dict(zip(self.names, self.columns, strict=True))
            if where.keys() != set(dense):
                return self.table
            columns = [where[name] for name in dense]
        return DenseRows(dense, np.array(columns, dtype=np.float64).T)


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

    prefix = "records" if has_records else "columns"
    kinds = _kinds(names, values, prefix)
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInputError("id must be a string", field="id")
    request = NativeRequest(
        names, values, kinds, prefix, _attributes(document.get("attributes")), request_id
    )
    if not all(k <= _NUMBERS for k in kinds):
        request.table  # noqa: B018  (other than numbers, a column can still fail in Arrow: now)
    return request


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


def _kinds(names: list[str], values: list[list[Any]], prefix: str) -> list[frozenset[type]]:
    """Each column's value types; InvalidInputError for a column that mixes them."""
    found: list[frozenset[type]] = []
    for name, column in zip(names, values, strict=True):
        kinds = frozenset(map(type, column))
        # int and float mix freely in JSON (1 and 1.5); any other mix is an error.
        mixed = kinds - _NULL
        if len(mixed) > 1 and mixed != _NUMBERS:
            found_names = ", ".join(sorted(_json_type_name(k) for k in mixed))
            where = f"{prefix}.{name}"
            raise InvalidInputError(f"{where} mixes value types ({found_names})", field=where)
        if int in kinds:
            for v in column:
                if type(v) is int and not _INT64_MIN <= v <= _INT64_MAX:
                    where = f"{prefix}.{name}"
                    raise InvalidInputError(
                        f"{where} cannot be read as a column: {v} does not fit in 64 bits",
                        field=where,
                    )
        found.append(kinds)
    return found


def _exact_ints(column: list[Any]) -> bool:
    """Every int in ``column`` is exact as a float64 (beyond, the signature's cast refuses it)."""
    return all(-_EXACT <= v <= _EXACT for v in column if type(v) is int)


def _table(
    names: list[str], values: list[list[Any]], all_kinds: list[frozenset[type]], prefix: str
) -> pa.Table:
    import numpy as np
    import pyarrow as pa

    arrays: list[pa.Array | None] = [None] * len(names)
    floats: list[int] = []
    ints: list[int] = []
    for i, column in enumerate(values):
        has_null = _NONE in all_kinds[i]
        kinds = set(all_kinds[i] - _NULL)
        if not has_null and float in kinds:
            floats.append(i)
        elif not has_null and kinds == {int}:
            ints.append(i)
        else:
            arrays[i] = _array(column, kinds, f"{prefix}.{names[i]}")
    # Numeric columns go through one numpy matrix and one Arrow buffer, sliced per
    # column: one pa.array per column costs 2.5 times as much for 20 features.
    for group, dtype in ((floats, np.float64), (ints, np.int64)):
        if len(group) < 2:
            for i in group:
                arrays[i] = _array(
                    values[i], {int} if dtype is np.int64 else {float}, f"{prefix}.{names[i]}"
                )
            continue
        try:
            matrix = np.array([values[i] for i in group], dtype=dtype)
        except OverflowError:  # an integer beyond int64: let the column say which
            for i in group:
                arrays[i] = _array(values[i], {int}, f"{prefix}.{names[i]}")
            continue
        rows = matrix.shape[1]
        flat = pa.array(matrix.reshape(-1))
        for j, i in enumerate(group):
            arrays[i] = flat.slice(j * rows, rows)
    return pa.Table.from_arrays(arrays, names=names)


def _array(values: list[Any], kinds: set[type], where: str) -> pa.Array:
    import pyarrow as pa

    # Naming the type skips Arrow's own inference pass over the values.
    # (An integer beyond int64 fails either way: Arrow does not infer uint64.)
    try:
        return pa.array(values, type=_arrow_types().get(frozenset(kinds)))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError) as exc:
        raise InvalidInputError(f"{where} cannot be read as a column: {exc}", field=where) from exc


@functools.cache
def _arrow_types() -> dict[frozenset[type], Any]:
    """The Arrow type of a column holding exactly these Python types (besides None)."""
    import pyarrow as pa

    return {
        frozenset({float}): pa.float64(),
        frozenset({int, float}): pa.float64(),
        frozenset({int}): pa.int64(),
        frozenset({str}): pa.string(),
        frozenset({bool}): pa.bool_(),
        frozenset(): pa.null(),
    }


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
