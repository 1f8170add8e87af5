"""Rows against a version's signature, one row at a time, and the scoring of those that fit.

The server refuses a request whose rows do not fit the signature
(:meth:`conveyor.registry.signature.Signature.enforce`). A batch cannot: one bad row
in ten million must not stop the job nor vanish. :func:`split_rows` sorts a chunk's
rows into those the model can take (converted to the trained types) and those it
cannot, each with its reason: a null where the model never saw one, text that is
not a number, a fraction in an integer column, a missing column. The rows that fit
go through ``Signature.enforce`` (the same check as the server's, so nothing the
server would refuse is scored) and :func:`score_rows`, the one scoring function
every engine runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from conveyor.registry.signature import Signature
    from conveyor.registry.versions import LoadedModel

__all__ = ["PREDICTION", "REASON", "ROW", "score_rows", "split_rows"]

#: The output column of a model that answers one array (its outputs' names otherwise).
PREDICTION = "prediction"
#: Columns a rejected row carries besides its own: why, and where in its partition.
REASON = "_reason"
ROW = "_row"


def split_rows(
    signature: Signature | None,
    table: pa.Table,
    *,
    offset: int = 0,
    required: Sequence[str] = (),
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """``(model_input, passed, rejected)`` of one chunk.

    ``model_input`` holds the signature's columns of the rows that fit (conforming:
    enforced), ``passed`` the same rows with every input column (the signature's ones
    converted), ``rejected`` the other rows as they came plus ``_reason`` and ``_row``
    (their position in the partition, from ``offset``). ``required`` columns (a sink's
    key) must be present and not null.
    """
    import numpy as np
    import pyarrow as pa

    n = table.num_rows
    reasons: np.ndarray = np.full(n, None, dtype=object)
    blamed = np.zeros(n, dtype=bool)
    converted: dict[str, pa.Array] = {}
    for name in required:
        if name not in table.column_names:
            return _all_rejected(table, offset, f"column {name!r} (the output key) is missing")
        nulls = np.asarray(table.column(name).is_null(), dtype=bool)
        _blame(reasons, blamed, nulls, f"column {name!r} (the output key) is null")
    if signature is not None:
        present = set(table.column_names)
        for column in signature.inputs:
            if column.name not in present:
                return _all_rejected(
                    table,
                    offset,
                    f"input column {column.name!r} is missing; the model expects "
                    f"{', '.join(signature.names)}",
                )
            target = signature.arrow_schema().field(column.name).type
            array, bad, why = _convert(table.column(column.name), target, column.type)
            if bad is not None:
                _blame(reasons, blamed, bad, f"input column {column.name!r}: {why}")
            if not column.nullable:
                nulls = np.asarray(array.is_null(), dtype=bool)
                _blame(
                    reasons,
                    blamed,
                    nulls,
                    f"input column {column.name!r} is null; the model was trained without "
                    "nulls in it",
                )
            converted[column.name] = array
    good = np.flatnonzero(~blamed)
    bad_rows = np.flatnonzero(blamed)
    names = table.column_names
    passed_columns = [
        converted[name] if name in converted else table.column(name) for name in names
    ]
    passed = pa.table(passed_columns, names=names)
    if len(good) < n:
        passed = passed.take(pa.array(good, type=pa.int64()))
    rejected = _rejected(table, bad_rows, reasons, offset)
    if signature is None:
        return passed, passed, rejected
    from conveyor.errors import InvalidInputError

    try:
        model_input = signature.enforce(passed.select(signature.names))
    except InvalidInputError as exc:  # a case the row checks above do not foresee
        return _empty(passed), _empty(passed), _all_rejected(table, offset, exc.message)
    return model_input, passed, rejected


def _blame(reasons: np.ndarray, blamed: np.ndarray, mask: np.ndarray, reason: str) -> None:
    """Give ``reason`` to the rows of ``mask`` that have none yet (the first one wins)."""
    new = mask & ~blamed
    if new.any():
        reasons[new] = reason
        blamed |= new


def _convert(array: Any, target: pa.DataType, type_name: str) -> tuple[Any, Any, str]:
    """``(array as target, rows that could not be converted or None, why)``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as t

    source = array.type
    if source == target:
        return array, None, ""
    if t.is_dictionary(source):
        array = array.cast(source.value_type)
        source = source.value_type
    if t.is_null(source):
        return pa.nulls(len(array), target), None, ""
    try:
        return pc.cast(array, target, safe=True), None, ""
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    text = t.is_string(source) or t.is_large_string(source)
    numeric_target = t.is_integer(target) or t.is_floating(target)
    if numeric_target and (text or t.is_integer(source) or t.is_floating(source)):
        import pandas as pd

        values = pd.to_numeric(pd.Series(array.to_pandas()), errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )
        present = ~np.asarray(array.is_null(), dtype=bool)
        if text:
            present &= np.asarray(
                pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(array), ""), False),
                dtype=bool,
            )
        bad = present & np.isnan(values)
        why = f"not a number (the model was trained on {type_name})"
        if t.is_integer(target):
            info = np.iinfo(target.to_pandas_dtype())
            fraction = present & ~bad & ~((np.trunc(values) == values) & np.isfinite(values))
            outside = present & ~bad & ~fraction & ((values < info.min) | (values > info.max))
            bad = bad | fraction | outside
            why = f"not a whole number within {type_name}, the type the model was trained on"
        keep = present & ~bad
        out = np.where(keep, values, 0)
        mask = ~keep
        if t.is_integer(target):
            result = pa.array(out.astype(target.to_pandas_dtype()), mask=mask, type=target)
        else:
            result = pa.array(out, mask=mask, type=pa.float64()).cast(target)
        return result, bad, why
    if t.is_boolean(target) and text:
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(array))
        truthy = pc.is_in(lowered, value_set=pa.array(["true", "1", "t", "yes"]))
        falsy = pc.is_in(lowered, value_set=pa.array(["false", "0", "f", "no"]))
        present = ~np.asarray(array.is_null(), dtype=bool)
        known = np.asarray(truthy, dtype=bool) | np.asarray(falsy, dtype=bool)
        bad = present & ~known
        values = np.asarray(truthy, dtype=bool)
        return pa.array(values, mask=~(present & known)), bad, "not true or false"
    if t.is_timestamp(target) and text:
        import pandas as pd

        parsed = pd.to_datetime(pd.Series(array.to_pandas()), errors="coerce", utc=True)
        present = ~np.asarray(array.is_null(), dtype=bool)
        bad = present & parsed.isna().to_numpy()
        result = pa.array(parsed, from_pandas=True).cast(target, safe=False)
        return result, bad, "not a timestamp"
    if (t.is_string(target) or t.is_large_string(target)) and not text:
        return pc.cast(array, target), None, ""
    n = len(array)
    return (
        pa.nulls(n, target),
        np.ones(n, dtype=bool),
        f"has type {source}; the model was trained on {type_name}",
    )


def _rejected(table: pa.Table, rows: Any, reasons: Any, offset: int) -> pa.Table:
    import pyarrow as pa

    index = pa.array(rows, type=pa.int64())
    picked = table.take(index)
    picked = picked.append_column(REASON, pa.array([reasons[i] for i in rows], type=pa.string()))
    return picked.append_column(ROW, pa.array(rows + offset, type=pa.int64()))


def _all_rejected(table: pa.Table, offset: int, reason: str) -> tuple[pa.Table, pa.Table, pa.Table]:
    import numpy as np

    n = table.num_rows
    rows = np.arange(n)
    reasons = np.full(n, reason, dtype=object)
    return _empty(table), _empty(table), _rejected(table, rows, reasons, offset)


def _empty(table: pa.Table) -> pa.Table:
    return table.slice(0, 0)


def score_rows(loaded: LoadedModel, model_input: pa.Table, passed: pa.Table) -> pa.Table:
    """``passed`` with the model's answer for ``model_input`` (the same rows) appended:
    one column ``prediction``, or one per output of a model that answers a mapping
    (several values per row: a fixed-size list column)."""
    answer = loaded.flavor.predict(loaded.model, model_input)
    columns = answer if isinstance(answer, Mapping) else {PREDICTION: answer}
    out = passed
    for name, value in columns.items():
        column = _arrow_column(value, passed.num_rows, str(name))
        label = str(name)
        if label in out.column_names:
            label = f"{label}_"  # an input column of that name stays as it came
        out = out.append_column(label, column)
    return out


def _arrow_column(value: Any, rows: int, name: str) -> pa.Array:
    import numpy as np
    import pyarrow as pa

    from conveyor.errors import ModelUnavailableError

    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    array = np.asarray(value)
    if array.ndim == 0 or array.shape[0] != rows:
        raise ModelUnavailableError(
            f"the model answered {array.shape} for {rows} rows in output {name!r}",
            reason="output_mismatch",
            field=name,
        )
    if array.ndim == 1:
        return pa.array(array if array.dtype.kind != "O" else array.tolist())
    flat = array.reshape(rows, -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
