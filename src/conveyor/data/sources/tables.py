"""Arrow helpers every source shares: type names, the watermark filter, unifying batches.

Loaded only when a source reads, so ``import conveyor.data.sources`` stays
free of pyarrow.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from conveyor.errors import InvalidInputError, NotFoundError

__all__ = [
    "arrow_type",
    "concat_unified",
    "filter_after",
    "high_water",
    "plain",
    "require_columns",
    "unified_schema",
    "watermark_scalar",
]

_TIMESTAMP = re.compile(r"^timestamp\[(s|ms|us|ns)(?:,\s*tz=([^\]]+))?\]$")
_DECIMAL = re.compile(r"^decimal(?:128|256)?\((\d+),\s*(\d+)\)$")
_UNITS = ("s", "ms", "us", "ns")
_EXAMPLES = "int64, float64, string, bool, date32, timestamp[us, tz=UTC], decimal128(12, 2)"


def arrow_type(name: str, *, column: str) -> pa.DataType:
    """The Arrow type spelled ``name`` (as ``str(type)`` prints it); errors name ``column``."""
    text = name.strip()
    match = _TIMESTAMP.match(text)
    if match:
        return pa.timestamp(match.group(1), tz=match.group(2))
    match = _DECIMAL.match(text)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        if precision <= 38:
            return pa.decimal128(precision, scale)
        return pa.decimal256(precision, scale)
    try:
        return pa.type_for_alias(text)
    except (ValueError, KeyError):
        raise InvalidInputError(
            f"column {column!r}: unknown type {name!r}; use an Arrow type name such as {_EXAMPLES}",
            column=column,
            type=name,
            field=f"column_types.{column}",
        ) from None


def require_columns(schema: pa.Schema, columns: Sequence[str], *, where: str) -> None:
    """NotFoundError naming the first of ``columns`` that ``schema`` lacks, and what it has."""
    names = set(schema.names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise NotFoundError(
            f"{where} has no column {missing[0]!r}"
            + (f" (nor {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else "")
            + f"; its columns are: {', '.join(schema.names) or '(none)'}",
            column=missing[0],
            source=where,
        )


def filter_after(table: pa.Table, column: str, after: Any, *, where: str) -> pa.Table:
    """The rows of ``table`` whose ``column`` is strictly greater than ``after``.

    Rows whose watermark is null are not past any watermark, so they are left
    out (they are read while no watermark is stored yet).
    """
    require_columns(table.schema, [column], where=where)
    values = table[column]
    bound = watermark_scalar(values.type, after, column=column, where=where)
    if bound.type != values.type and pa.types.is_timestamp(values.type):
        values = values.cast(bound.type)
    try:
        mask = pc.greater(values, bound)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _mismatch(column, values.type, after, where, exc) from exc
    return table.filter(mask, null_selection_behavior="drop")


def watermark_scalar(kind: pa.DataType, after: Any, *, column: str, where: str) -> pa.Scalar:
    """``after`` as a scalar that compares exactly with a column of type ``kind``.

    Nothing is rounded: a timestamp column coarser than microseconds is
    compared at microseconds (the caller casts it), and an ISO string is
    parsed for a timestamp, date or decimal column.
    """
    try:
        if pa.types.is_timestamp(kind):
            if isinstance(after, str):
                after = pa.scalar(after).cast(pa.timestamp("us", tz=kind.tz)).as_py()
            if not isinstance(after, datetime):
                raise TypeError(f"expected a datetime, got {type(after).__name__}")
            aware = after.tzinfo is not None and after.utcoffset() is not None
            if aware != (kind.tz is not None):
                raise TypeError(
                    "one of the watermark and the column has a time zone and the other has not"
                )
            unit = kind.unit if _UNITS.index(kind.unit) >= _UNITS.index("us") else "us"
            return pa.scalar(after, type=pa.timestamp(unit, tz=kind.tz))
        if isinstance(after, str) and not (
            pa.types.is_string(kind) or pa.types.is_large_string(kind)
        ):
            # "2024-05-01" for a date column, "12.5" for a decimal one.
            return pa.scalar(after).cast(kind)
        return pa.scalar(after)
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _mismatch(column, kind, after, where, exc) from exc


def _mismatch(
    column: str, kind: pa.DataType, after: Any, where: str, exc: BaseException
) -> InvalidInputError:
    return InvalidInputError(
        f"{where}: the watermark {after!r} ({type(after).__name__}) cannot be compared with "
        f"column {column!r} of type {kind}: {exc}",
        column=column,
        type=str(kind),
    )


def high_water(table: pa.Table, column: str) -> Any | None:
    """The largest value of ``column`` as a Python value; None for no (non-null) rows.

    A nanosecond timestamp is floored to microseconds (what a Python datetime
    holds): a floor can only re-read a row next time, never skip one.
    """
    values = table[column]
    if table.num_rows == 0 or values.null_count == table.num_rows:
        return None
    top = pc.max(values)
    if pa.types.is_timestamp(values.type) and values.type.unit == "ns":
        top = pc.floor_temporal(top, unit="microsecond").cast(pa.timestamp("us", tz=values.type.tz))
    return top.as_py()


def concat_unified(tables: Sequence[pa.Table], *, what: str, where: str) -> pa.Table:
    """Concatenate batches whose schemas may differ (a column added, ints then floats).

    Columns missing from a batch are null there; types widen as Arrow's
    permissive promotion allows (null -> anything, int -> float, decimals).
    Types that cannot be reconciled raise InvalidInputError naming the
    column and the two batches (``what`` names a batch: "page", "chunk").
    """
    if not tables:
        return pa.table({})
    labels = [f"{what} {number}" for number in range(1, len(tables) + 1)]
    unified_schema([t.schema for t in tables], labels, where=where)
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


def unified_schema(schemas: Sequence[pa.Schema], labels: Sequence[str], *, where: str) -> pa.Schema:
    """One schema for several batches or files; a type conflict names the column and both."""
    first_seen: dict[str, tuple[pa.Field, str]] = {}
    for label, schema in zip(labels, schemas, strict=True):
        for fld in schema:
            seen = first_seen.get(fld.name)
            if seen is None:
                first_seen[fld.name] = (fld, label)
                continue
            try:
                merged = pa.unify_schemas(
                    [pa.schema([seen[0]]), pa.schema([fld])], promote_options="permissive"
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise InvalidInputError(
                    f"{where}: column {fld.name!r} is {seen[0].type} in {seen[1]} but "
                    f"{fld.type} in {label}: {exc}",
                    column=fld.name,
                    types=[str(seen[0].type), str(fld.type)],
                ) from exc
            # Keep the label of the first batch that showed the column, for the message.
            first_seen[fld.name] = (merged.field(0), seen[1])
    return pa.unify_schemas(list(schemas), promote_options="permissive")


def plain(value: Any) -> Any:
    """A JSON-ready form of a value for a description (ISO text for times, str for decimals)."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    return value
