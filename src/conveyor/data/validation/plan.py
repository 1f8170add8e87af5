"""Expectations compiled to SQL fragments that DuckDB evaluates in one scan.

A row-level expectation becomes a *failure predicate*: a boolean SQL
expression that is TRUE where a row breaks it and FALSE or NULL where it
does not (NULL is how "a missing value is not a failure of between" falls
out of SQL). The first pass counts each predicate with ``count_if``; the
second pass, which tags failing rows, uses the very same
text, so the counts and the tags cannot disagree.

``unique`` needs the whole column: its duplicated keys are found by one
``GROUP BY ... HAVING count(*) > 1`` and LEFT JOINed back (the join's build
side holds only the duplicated keys, so the probe costs little), which makes
duplicates a per-row fact like any other. When the batch joins rows already
stored (an append to a data set), those rows' keys are counted too, so a
key the version already holds is a duplicate: uniqueness is a property of
the version, not of one batch.

Column references are qualified (``s."amount"``) and quoted; literals are
rendered with their types, never interpolated raw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from conveyor.data.validation.expectations import (
    Between,
    Custom,
    Expectation,
    Freshness,
    InSet,
    MatchesRegex,
    NotNull,
    RowCount,
    RowExpectation,
    Schema,
    Unique,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ROW_ID", "Plan", "category", "custom_column", "literal", "plan", "quote"]

#: Columns Conveyor adds to the batch it scans; a batch may not bring its own.
RESERVED_PREFIX = "__conveyor_"
ROW_ID = f"{RESERVED_PREFIX}row"
#: The view holding the stored rows a batch joins (``validate(existing=...)``).
EXISTING = f"{RESERVED_PREFIX}existing"


@dataclass(frozen=True, slots=True)
class Plan:
    """How one expectation is evaluated."""

    index: int
    expectation: Expectation
    failure: str | None = None
    """Row-level: the SQL predicate, TRUE where a row fails."""
    join: str | None = None
    """A LEFT JOIN the predicate needs (unique)."""
    aggregates: dict[str, str] = field(default_factory=dict)
    """Batch-level facts: result column alias -> SQL aggregate."""
    problem: str | None = None
    """Why it cannot be evaluated on this batch (a missing column, a wrong type)."""
    scope: str | None = None
    """What beyond the batch it was judged against (unique: the stored rows it joins)."""

    @property
    def alias(self) -> str:
        """The first pass's column holding this expectation's failure count."""
        return f"f{self.index}"


def plan(
    index: int,
    expectation: Expectation,
    schema: pa.Schema,
    source: str,
    existing: pa.Schema | None = None,
) -> Plan:
    """The SQL for ``expectation`` over ``source`` (a table name or ``read_parquet(...)``).

    ``existing``: the schema of the stored rows the batch joins (view :data:`EXISTING`),
    whose keys ``unique`` counts with the batch's.
    """
    missing = [c for c in expectation.columns_used if c not in schema.names]
    if missing:
        listed = ", ".join(repr(c) for c in missing)
        return Plan(index, expectation, problem=f"column {listed} is not in the data")
    if isinstance(expectation, Custom):
        return Plan(
            index, expectation, failure=f"NOT coalesce(s.{quote(custom_column(index))}, FALSE)"
        )
    if isinstance(expectation, RowExpectation):
        return _registered(index, expectation, schema)
    if isinstance(expectation, Unique):
        joined = existing is not None and all(k in existing.names for k in expectation.keys)
        return _unique(index, expectation, schema, source, joined)
    if isinstance(expectation, RowCount):
        return Plan(index, expectation)
    if isinstance(expectation, Schema):
        aggregates = {
            f"n{index}_{k}": f"count_if(s.{quote(c.name)} IS NULL)"
            for k, c in enumerate(expectation.columns)
            if not c.nullable and c.name in schema.names
        }
        return Plan(index, expectation, aggregates=aggregates)
    column = expectation.column
    kind = category(schema.field(column).type)
    ref = f"s.{quote(column)}"
    if isinstance(expectation, Freshness):
        if kind not in ("timestamp", "date"):
            return _wrong_type(index, expectation, column, schema, "a timestamp or date column")
        value = f"max({ref})::TIMESTAMP" if kind == "date" else f"max({ref})"
        return Plan(index, expectation, aggregates={f"t{index}": f"epoch_us({value})"})
    if isinstance(expectation, NotNull):
        return Plan(index, expectation, failure=_missing(ref, kind))
    problem = _type_problem(expectation, kind)
    if problem:
        return _wrong_type(index, expectation, column, schema, problem)
    if isinstance(expectation, Between):
        conditions = []
        if expectation.min is not None:
            op = ">" if expectation.strict_min else ">="
            conditions.append(f"{ref} {op} {literal(expectation.min)}")
        if expectation.max is not None:
            op = "<" if expectation.strict_max else "<="
            conditions.append(f"{ref} {op} {literal(expectation.max)}")
        failure = f"NOT ({' AND '.join(conditions)})"
    elif isinstance(expectation, InSet):
        values = [v for v in expectation.values if not (isinstance(v, float) and v != v)]
        failure = f"{ref} NOT IN ({', '.join(literal(v) for v in values)})"
    else:
        failure = f"NOT regexp_matches({ref}, {literal(expectation.pattern)})"
    if kind == "float":
        # NaN is a missing number: not_null's business, not a range's.
        failure = f"({failure} AND NOT isnan({ref}))"
    return Plan(index, expectation, failure=failure)


def custom_column(index: int) -> str:
    """Where the boolean result of custom expectation ``index`` is attached to the batch."""
    return f"{RESERVED_PREFIX}custom_{index}"


def category(arrow_type: pa.DataType) -> str:
    """What a column holds, as far as the SQL is concerned."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_integer(arrow_type) or pa.types.is_decimal(arrow_type):
        return "number"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    if (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    ):
        return "string"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    return "other"


def quote(name: str) -> str:
    """A quoted SQL identifier (any column name, quotes and unicode included)."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A typed SQL literal for a bound or a set member."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f"'{value}'::DOUBLE"
        return repr(value)
    if isinstance(value, datetime):
        sql_type = "TIMESTAMP" if value.tzinfo is None else "TIMESTAMPTZ"
        return f"'{value.isoformat()}'::{sql_type}"
    if isinstance(value, date):
        return f"'{value.isoformat()}'::DATE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


# -- helpers ----------------------------------------------------------------------


def _missing(ref: str, kind: str) -> str:
    return f"({ref} IS NULL OR isnan({ref}))" if kind == "float" else f"{ref} IS NULL"


def _unique(
    index: int, expectation: Unique, schema: pa.Schema, source: str, joined: bool = False
) -> Plan:
    keys = expectation.keys
    alias = f"u{index}"
    present = []
    for key in keys:
        present.append(f"{quote(key)} IS NOT NULL")
        if category(schema.field(key).type) == "float":
            present.append(f"NOT isnan({quote(key)})")
    listed = ", ".join(quote(k) for k in keys)
    rows = source
    if joined:
        rows = f"(SELECT {listed} FROM {source} UNION ALL SELECT {listed} FROM {quote(EXISTING)})"
    duplicated = (
        f"SELECT {listed}, TRUE AS hit FROM {rows} WHERE {' AND '.join(present)} "
        f"GROUP BY {listed} HAVING count(*) > 1"
    )
    on = " AND ".join(f"s.{quote(k)} = {alias}.{quote(k)}" for k in keys)
    return Plan(
        index,
        expectation,
        failure=f"{alias}.hit IS NOT NULL",
        join=f"LEFT JOIN ({duplicated}) AS {alias} ON {on}",
        scope="judged with the rows already stored" if joined else None,
    )


def _registered(index: int, expectation: RowExpectation, schema: pa.Schema) -> Plan:
    """A kind added with ``EXPECTATION_KINDS.register``: its own SQL says which rows fail."""
    column = expectation.column
    try:
        failure = expectation.failure_sql(f"s.{quote(column)}", category(schema.field(column).type))
    except Exception as exc:  # a kind that cannot judge this column fails, with its reason
        return Plan(index, expectation, problem=f"{expectation.kind} on {column!r}: {exc}")
    return Plan(index, expectation, failure=f"({failure})")


def _type_problem(expectation: Expectation, kind: str) -> str | None:
    """What column the expectation needs, when this one is not it."""
    if isinstance(expectation, MatchesRegex):
        return None if kind == "string" else "a string column"
    if isinstance(expectation, Between):
        values: Sequence[Any] = [v for v in (expectation.min, expectation.max) if v is not None]
    elif isinstance(expectation, InSet):
        values = expectation.values
    else:
        return None
    needs = {_needs(v) for v in values}
    allowed = {
        "number": {"number"},
        "float": {"number"},
        "timestamp": {"temporal", "text"},
        "date": {"temporal", "text"},
        "string": {"text"},
        "bool": {"bool"},
    }.get(kind, set())
    if needs <= allowed:
        return None
    wanted = {"number": "a numeric", "temporal": "a timestamp or date", "text": "a string"}
    return " or ".join(sorted(wanted.get(n, "a boolean") for n in needs)) + " column"


def _needs(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, date):
        return "temporal"
    return "text"


def _wrong_type(
    index: int, expectation: Expectation, column: str, schema: pa.Schema, needs: str
) -> Plan:
    held = schema.field(column).type
    return Plan(
        index,
        expectation,
        problem=f"column {column!r} holds {held}; {expectation.kind} needs {needs}",
    )
