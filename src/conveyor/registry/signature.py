"""A model's input signature: the columns it was trained on, enforced at predict time.

Inferred from the training frame (pandas, polars or Arrow): each column's
name, Arrow type, and whether it may hold nulls (a column with no null in
the training data is declared non-nullable, since the model never saw one).

:meth:`Signature.enforce` checks a frame before the model sees it and names
the first offending column: a missing column, an extra one (unless extras
are allowed, then they are dropped), a type that cannot be safely cast, or a
null in a non-nullable column. Columns come out in training order, cast to
the training types, so a model never receives silently reordered features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError
from conveyor.registry.outputs import Output, outputs_from_dicts

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["EXAMPLE_ROWS", "Column", "Signature"]

#: How many rows of the training frame a signature keeps as its input example.
EXAMPLE_ROWS = 5
#: Arrow types whose values JSON carries exactly (a stored example reads back the same).
_EXAMPLE_TYPES = ("int", "uint", "float", "double", "bool", "string", "large_string")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    nullable: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}


@dataclass(frozen=True, slots=True)
class Signature:
    """The input columns a model expects, in order."""

    inputs: tuple[Column, ...]
    #: A few real rows of the training frame (records), which a server warms a version up
    #: with: synthesized rows (zeros, empty strings) can be refused by a valid model, such
    #: as a one-hot encoder that has never seen "". Empty when the frame had no row that
    #: JSON can carry exactly (numbers, strings and booleans, no null).
    example: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    #: What the model answers per row, recorded at registration by running it on the example
    #: (see :mod:`conveyor.registry.outputs`); empty for versions registered before.
    outputs: tuple[Output, ...] = ()
    #: The Arrow schema of a conforming table, built on first use.
    _arrow: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def infer(cls, frame: Any, *, example_rows: int = EXAMPLE_ROWS) -> Signature:
        """The signature of a training frame (pandas, polars, Arrow or a dict of columns),
        with up to ``example_rows`` of its rows as the input example."""
        from conveyor.data.frames import to_arrow

        table = to_arrow(frame)
        return cls(
            tuple(
                Column(field.name, str(field.type), table.column(i).null_count > 0)
                for i, field in enumerate(table.schema)
            ),
            _example_of(table, example_rows),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        example = tuple(dict(row) for row in data.get("example") or ())
        outputs = outputs_from_dicts(data.get("outputs"))
        return cls(tuple(Column(**c) for c in data["inputs"]), example, outputs)

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"inputs": [c.to_dict() for c in self.inputs]}
        if self.example:
            found["example"] = [dict(row) for row in self.example]
        if self.outputs:
            found["outputs"] = [o.to_dict() for o in self.outputs]
        return found

    def with_outputs(self, outputs: tuple[Output, ...]) -> Signature:
        """This signature with ``outputs`` as its output signature."""
        return Signature(self.inputs, self.example, tuple(outputs))

    def example_table(self, rows: int) -> pa.Table | None:
        """``rows`` rows of the example (repeated as needed), conforming; None without one."""
        if not self.example:
            return None
        import pyarrow as pa

        records = [self.example[i % len(self.example)] for i in range(rows)]
        return self.enforce(pa.Table.from_pylist(records))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.inputs]

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema a conforming table has (built once per signature)."""
        cached = self._arrow
        if cached is None:
            import pyarrow as pa

            cached = pa.schema([(c.name, _arrow_type(c.type)) for c in self.inputs])
            object.__setattr__(self, "_arrow", cached)  # a cache, not state: frozen stays true
        return cached

    def enforce(self, frame: Any, *, allow_extra: bool = False) -> pa.Table:
        """``frame`` as an Arrow table in the signature's column order and types.

        Raises :class:`InvalidInputError` naming the column (``field``) that
        is missing, extra, of the wrong type or null where nulls were never seen.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        from conveyor.data.frames import to_arrow

        table = to_arrow(frame)
        # The hot case in a server: exactly the trained columns and types, in order.
        if table.schema.equals(self.arrow_schema()):
            for i, column in enumerate(self.inputs):
                if not column.nullable and table.column(i).null_count:
                    break  # the slow path below names the column
            else:
                return table
        present = set(table.column_names)
        for column in self.inputs:
            if column.name not in present:
                raise InvalidInputError(
                    f"input column {column.name!r} is missing; the model expects "
                    f"{', '.join(self.names)}",
                    field=column.name,
                )
        if not allow_extra:
            expected = set(self.names)
            for name in table.column_names:
                if name not in expected:
                    raise InvalidInputError(
                        f"input column {name!r} is not in the model's signature "
                        f"({', '.join(self.names)}); drop it or allow extra columns",
                        field=name,
                    )
        arrays = []
        for column in self.inputs:
            array = table.column(column.name)
            target = _arrow_type(column.type)
            if array.type != target:
                if _integral_source(array.type, target):
                    # 3.0 for an int64 column: what Python and pandas clients send.
                    array = _whole_numbers(array, column, target)
                elif not _castable(array.type, target):
                    raise InvalidInputError(
                        f"input column {column.name!r} has type {array.type}; "
                        f"the model was trained on {column.type}",
                        field=column.name,
                        expected=column.type,
                        observed=str(array.type),
                    )
                try:
                    array = pc.cast(array, target, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise InvalidInputError(
                        f"input column {column.name!r} cannot be read as {column.type}: {exc}",
                        field=column.name,
                    ) from exc
            if not column.nullable and array.null_count:
                raise InvalidInputError(
                    f"input column {column.name!r} has {array.null_count} null value(s); "
                    "the model was trained without nulls in it",
                    field=column.name,
                )
            arrays.append(array)
        return pa.table(arrays, names=self.names)


def _arrow_type(name: str) -> pa.DataType:
    import pyarrow as pa

    try:
        return pa.type_for_alias(name)
    except ValueError:
        pass
    # Aliases do not cover parametrised types; read them back from a schema string.
    if name.startswith("timestamp["):
        unit, _, tz = name[len("timestamp[") : -1].partition(", tz=")
        return pa.timestamp(unit, tz or None)
    if name.startswith("dictionary<values=string"):
        return pa.dictionary(pa.int32(), pa.string())
    raise InvalidInputError(f"the signature has a type Conveyor cannot read: {name}", field="type")


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether values of ``source`` may stand for ``target`` without changing meaning."""
    import pyarrow.types as t

    if t.is_dictionary(source):
        source = source.value_type
    if t.is_dictionary(target):
        target = target.value_type
    if source == target or t.is_null(source):
        return True
    if t.is_integer(target):
        return bool(t.is_integer(source))  # a safe cast still refuses overflow
    if t.is_floating(target):
        return bool(t.is_integer(source) or t.is_floating(source))
    if t.is_string(target) or t.is_large_string(target):
        return bool(t.is_string(source) or t.is_large_string(source))
    if t.is_timestamp(target):
        return bool(t.is_timestamp(source))
    return False


def _integral_source(source: pa.DataType, target: pa.DataType) -> bool:
    """A float column read as an integer one: accepted when every value is a whole number."""
    import pyarrow.types as t

    return bool(t.is_floating(source) and t.is_integer(target))


def _whole_numbers(array: Any, column: Column, target: pa.DataType) -> Any:
    """``array`` (floats) as ``target`` integers, or InvalidInputError naming the column and
    the first value that is not a whole number (3.5, NaN) or does not fit."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(array, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    import numpy as np

    values = np.asarray(pc.cast(array, pa.float64()), dtype=np.float64)  # nulls read as NaN
    present = ~np.asarray(pc.is_null(array), dtype=bool)  # NaN itself is a value: refused
    bad = present & ~(np.isfinite(values) & (np.trunc(values) == values))
    where = np.flatnonzero(bad)
    if where.size:
        row = int(where[0])
        value = float(values[row])
        raise InvalidInputError(
            f"input column {column.name!r} has type {array.type} with {value!r} at row "
            f"{row}, which is not a whole number; the model was trained on {column.type}",
            field=column.name,
            expected=column.type,
            observed=str(array.type),
            row=row,
        )
    raise InvalidInputError(
        f"input column {column.name!r} has values beyond the range of {column.type}, the "
        "type the model was trained on",
        field=column.name,
        expected=column.type,
        observed=str(array.type),
    )


def _example_of(table: pa.Table, rows: int) -> tuple[dict[str, Any], ...]:
    """The first ``rows`` rows without a null, as records, if every column's values read back
    exactly from JSON; else none."""
    if rows <= 0 or table.num_rows == 0:
        return ()
    if not all(str(f.type).startswith(_EXAMPLE_TYPES) for f in table.schema):
        return ()
    import math

    found: list[dict[str, Any]] = []
    for record in table.slice(0, min(table.num_rows, 10 * rows)).to_pylist():
        values = record.values()
        if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in values):
            continue
        found.append(record)
        if len(found) == rows:
            break
    return tuple(found)
