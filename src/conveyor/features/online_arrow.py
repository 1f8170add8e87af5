"""An Arrow table's latest record per entity for :meth:`OnlineStore.write`, a column at a time.

Materialization hands the online store Arrow tables of 100,000 rows. Turning each into
Python dicts and checking every value on its own cost about two thirds of a write; here
each column is checked once by its Arrow type (a ``double`` feature held in a float or
integer column cannot hold anything else), times become microseconds in Arrow, keys are
built from the columns' Python values, the latest row per entity is picked first, and
only the winners are encoded. The records are byte for byte those of the row-by-row path
(:func:`conveyor.features.online._encode`).

Whenever a column is not one this path knows for sure (a null in a key or time, a type
that differs from the declared one, a list, a dictionary-encoded column, a time before
1970 in nanoseconds), :func:`latest_of_table` returns None and the row-by-row path runs,
which accepts or refuses each value and names the row it refuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from conveyor.features.online import _encode, _key_part, _native

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["latest_of_table"]

#: A declared kind and the Arrow types that can hold only values of that kind.
_FITS: dict[str, str] = {
    "int": "is_integer",
    "str": "is_string",
    "bool": "is_boolean",
    "timestamp": "is_timestamp",
    "date": "is_date",
}


def _micros(column: Any) -> list[int] | None:
    """A timestamp column as microseconds since 1970 (naive means UTC), or None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_timestamp(column.type) or column.null_count:
        return None
    ints = column.cast(pa.int64())
    unit = column.type.unit
    if unit == "us":
        return list(ints.to_pylist())
    if unit == "ns":
        if len(ints) and pc.min(ints).as_py() < 0:
            return None  # integer division would round toward zero, not down
        return list(pc.divide(ints, 1000).to_pylist())
    scale = {"s": 1_000_000, "ms": 1000}[unit]
    return list(pc.multiply(ints, scale).to_pylist())


def _values(column: Any, declared: tuple[str, bool] | None) -> tuple[list[Any], bool] | None:
    """(values, whether each needs encoding) of a feature column, or None: row by row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind_of = column.type
    if pa.types.is_null(kind_of):
        return [None] * len(column), False
    if pa.types.is_large_string(kind_of):
        column = column.cast(pa.string())
        kind_of = column.type
    if declared is not None:
        kind, is_list = declared
        if is_list:
            return None
        if kind == "float":
            if pa.types.is_integer(kind_of):
                column = column.cast(pa.float64(), safe=False)  # as float(int) rounds
                kind_of = column.type
            if not pa.types.is_floating(kind_of):
                return None
        elif kind == "bytes":
            if not (pa.types.is_binary(kind_of) or pa.types.is_large_binary(kind_of)):
                return None
        elif not getattr(pa.types, _FITS[kind])(kind_of):
            return None
    if pa.types.is_integer(kind_of) or pa.types.is_string(kind_of) or pa.types.is_boolean(kind_of):
        return column.to_pylist(), False
    if pa.types.is_floating(kind_of):
        if pa.types.is_float16(kind_of):
            return None
        finite = pc.is_finite(column)
        plain = finite.null_count == len(column) or pc.all(finite).as_py() is not False
        return column.to_pylist(), not plain  # NaN and infinities are tagged
    if (
        pa.types.is_timestamp(kind_of)
        or pa.types.is_date(kind_of)
        or pa.types.is_binary(kind_of)
        or pa.types.is_large_binary(kind_of)
    ):
        return column.to_pylist(), True
    return None


def latest_of_table(
    view: str,
    table: pa.Table,
    join_keys: Sequence[str],
    event_time: str,
    created_time: str | None,
    features: Sequence[str],
    declared: Mapping[str, tuple[str, bool]],
    now_us: int,
) -> dict[str, tuple[int, int, bytes]] | None:
    """``{key: (event µs, created µs, record)}`` of the latest row per entity, or None when
    a column needs the row-by-row path (see the module)."""
    names = set(table.column_names)
    wanted = [*join_keys, event_time, *features, *([created_time] if created_time else [])]
    if not all(name in names for name in wanted):
        return None
    events = _micros(table.column(event_time))
    if events is None:
        return None
    created = None
    if created_time is not None:
        created = _micros(table.column(created_time))
        if created is None:
            return None
    keys = _keys(view, table, join_keys)
    if keys is None:
        return None
    columns: dict[str, tuple[list[Any], bool]] = {}
    for f in features:
        found = _values(table.column(f), declared.get(f))
        if found is None:
            return None
        columns[f] = found

    # The latest row per key (on equal times, the later row), then only those encoded.
    winner: dict[str, int] = {}
    for i, key in enumerate(keys):
        j = winner.get(key)
        if j is None:
            winner[key] = i
            continue
        mine = (events[i], now_us if created is None else created[i])
        theirs = (events[j], now_us if created is None else created[j])
        if mine >= theirs:
            winner[key] = i
    plain = [(f, vals) for f, (vals, encode) in columns.items() if not encode]
    coded = [(f, vals) for f, (vals, encode) in columns.items() if encode]
    dumps = orjson.dumps
    latest: dict[str, tuple[int, int, bytes]] = {}
    for key, i in winner.items():
        event_us = events[i]
        created_us = now_us if created is None else created[i]
        values = {f: vals[i] for f, vals in plain}
        record: dict[str, Any] = {"e": event_us, "c": created_us, "v": values}
        if coded:
            tags: dict[str, str] = {}
            for f, vals in coded:
                values[f] = _encode(f, _native(vals[i]), tags, i)
            record["v"] = {f: values[f] for f in columns}  # the features' order, as rows do
            if tags:
                record["x"] = tags
        latest[key] = (event_us, created_us, dumps(record))
    return latest


def _keys(view: str, table: Any, join_keys: Sequence[str]) -> list[str] | None:
    """Each row's key (:func:`conveyor.features.online.entity_key`), or None."""
    import pyarrow as pa

    ordered = sorted(join_keys)
    tail = "}:" + quote(view, safe="")
    parts: list[list[str]] = []
    for n, name in enumerate(ordered):
        column = table.column(name)
        if column.null_count:
            return None
        head = ("f:{" if n == 0 else "&") + quote(name, safe="") + "="
        if pa.types.is_integer(column.type):
            parts.append([f"{head}{v}" for v in column.to_pylist()])
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            parts.append([head + _key_part(name, v) for v in column.to_pylist()])
        else:
            return None
    if len(parts) == 1:
        return [p + tail for p in parts[0]]
    return ["".join(row) + tail for row in zip(*parts, strict=True)]
