"""Run expectations over a batch in DuckDB, and divide its rows when asked.

A Parquet path is scanned by DuckDB directly, reading only the columns the
expectations use; an Arrow table (or a pandas / polars frame, converted
without copying where possible) is scanned in place. Each call gets its own
cursor on one in-memory database per process.

``split=False`` is one query (:func:`~conveyor.data.validation.passes.count_pass`),
so memory stays flat in the number of rows. ``split=True`` finds the failing
rows and their flags in one scan and counts from them, reads the few
batch-level facts in another narrow one, then divides the rows in Arrow
(:mod:`conveyor.data.validation.split`).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.checks.result import CheckResult, Report
from conveyor.data.schema import diff_schema, schema_of
from conveyor.data.validation.expectations import (
    Custom,
    Expectation,
    MatchesRegex,
    check_names,
    parse_expectations,
)
from conveyor.data.validation.outcomes import batch_check, row_check, unevaluable
from conveyor.data.validation.passes import (
    ROW,
    count_pass,
    counts_from_flags,
    facts_pass,
    flag_pass,
)
from conveyor.data.validation.plan import (
    EXISTING,
    RESERVED_PREFIX,
    ROW_ID,
    Plan,
    custom_column,
    literal,
    plan,
    quote,
)
from conveyor.data.validation.result import REASON_COLUMN, ValidationResult
from conveyor.data.validation.split import divide
from conveyor.errors import ConfigError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = ["validate"]

_BATCH = f"{RESERVED_PREFIX}batch"

# One in-memory DuckDB per process, created on first use: opening a database
# costs ~40 ms, a cursor on it ~1 ms, and each cursor keeps its own registered
# views, so concurrent validations do not see each other's batches.
_DATABASE: tuple[int, duckdb.DuckDBPyConnection] | None = None
_DATABASE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Batch:
    """Where the rows are: an Arrow table in memory or a Parquet file."""

    schema: pa.Schema
    table: pa.Table | None
    path: Path | None

    @property
    def source(self) -> str:
        if self.path is not None:
            return f"read_parquet({literal(str(self.path))})"
        return quote(_BATCH)

    def describe(self) -> str:
        return f"Parquet file {self.path}" if self.path is not None else "the batch"


def validate(
    data: Any,
    expectations: Sequence[Expectation | Mapping[str, Any]],
    *,
    subject: str,
    now: datetime | None = None,
    accepted_schema: dict[str, Any] | None = None,
    split: bool = True,
    existing: Any = None,
) -> ValidationResult:
    """Judge ``data`` against ``expectations`` and, with ``split``, divide its rows.

    ``data`` is a pyarrow Table, a pandas or polars DataFrame, or the path
    of a Parquet file (scanned by DuckDB without loading it, unless rows are
    split or a custom expectation needs them in memory). ``expectations``
    are objects or plain mappings (parsed as :func:`parse_expectations` does).
    ``now`` (aware; default: the current time) is what freshness is measured
    against. ``accepted_schema`` (the schema of the last accepted version)
    adds the schema-change checks: a removed or retyped column fails, an
    added one warns. ``existing`` (a table or frame: the stored rows the batch
    will join, such as the previous version of an appended data set) makes
    ``unique`` count their keys too, so a batch row repeating a stored key
    fails; only the batch's rows are flagged.
    """
    if not isinstance(subject, str) or not subject:
        raise InvalidInputError(
            f"subject must be a non-empty string, got {subject!r}", field="subject"
        )
    items = _expectations(expectations)
    at = _now(now)
    _check_accepted(accepted_schema)
    batch = _load(data, in_memory=any(isinstance(e, Custom) for e in items))
    schema = schema_of(batch.schema)
    joined = _existing(existing, batch.schema)

    with _cursor() as con:
        # Aware timestamps are compared and converted in UTC, whatever the machine's zone.
        con.execute("SET TimeZone = 'UTC'").fetchall()
        _check_patterns(con, items)
        if joined is not None:
            con.register(EXISTING, joined)
        plans = [
            plan(i, e, batch.schema, batch.source, joined.schema if joined is not None else None)
            for i, e in enumerate(items)
        ]
        scanned = batch.table
        if batch.table is not None:
            plans, scanned = _run_custom(plans, batch.table)
        where = batch.describe()
        flags = None
        if not split:
            if scanned is not None:
                con.register(_BATCH, scanned)
            facts = count_pass(con, plans, batch.source, where)
        else:
            source, row_id = _numbered(con, batch, scanned)
            facts = facts_pass(con, plans, batch.source, where)
            flags = _flags(con, plans, source, row_id, where)
            facts.update(counts_from_flags(flags, plans))
        rows = int(facts["n_rows"])
        checks, row_failures, batch_failures = _checks(plans, facts, rows, batch.schema, at)
        change = None
        if accepted_schema is not None:
            change = diff_schema(accepted_schema, schema)
            change_checks = change.checks()
            checks.extend(change_checks)
            batch_failures.extend(c.name for c in change_checks if c.status == "fail")
    valid = invalid = None
    if flags is not None:
        valid, invalid = divide(flags, plans, table=batch.table, path=batch.path)
    report = Report(subject=subject, kind="data", checks=checks)
    return ValidationResult(
        report=report,
        row_count=rows,
        failed_rows=int(facts.get("failed_rows") or 0),
        row_failures=row_failures,
        batch_failures=tuple(batch_failures),
        schema=schema,
        schema_change=change,
        table=batch.table if split else None,
        valid=valid,
        invalid=invalid,
    )


def _cursor() -> duckdb.DuckDBPyConnection:
    import duckdb

    global _DATABASE
    with _DATABASE_LOCK:
        # A database inherited through fork() is not safe to use: open a new one.
        if _DATABASE is None or _DATABASE[0] != os.getpid():
            _DATABASE = (os.getpid(), duckdb.connect())
        return _DATABASE[1].cursor()


# -- input ------------------------------------------------------------------------


def _expectations(items: Any) -> list[Expectation]:
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise InvalidInputError(
            f"expectations must be a list, got {type(items).__name__}", field="expectations"
        )
    parsed = parse_expectations(items)
    check_names(parsed)
    return parsed


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInputError(
            f"now must be a time-zone aware datetime (for example datetime.now(UTC)), got {now!r}",
            field="now",
        )
    return now


def _check_accepted(accepted: Any) -> None:
    """The shape :func:`conveyor.data.schema.schema_of` writes, or a clear error."""
    if accepted is None:
        return
    columns = accepted.get("columns") if isinstance(accepted, Mapping) else None
    if not isinstance(columns, list) or not all(
        isinstance(c, Mapping) and isinstance(c.get("name"), str) and isinstance(c.get("type"), str)
        for c in columns
    ):
        raise InvalidInputError(
            "accepted_schema must look like {'columns': [{'name': ..., 'type': ..., "
            f"'nullable': ...}}, ...]}} (as schema_of writes it), got {str(accepted)[:200]}",
            field="accepted_schema",
        )


def _load(data: Any, *, in_memory: bool) -> _Batch:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conveyor.data.frames import to_arrow

    if isinstance(data, str | os.PathLike):
        path = Path(data).expanduser().resolve()
        if not path.is_file():
            raise NotFoundError(f"no Parquet file at {path}", kind="file", path=str(path))
        try:
            schema = pq.read_schema(path)
            table = pq.read_table(path) if in_memory else None
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInputError(
                f"{path} is not a readable Parquet file: {exc}", field="data", path=str(path)
            ) from exc
        _check_columns(schema, str(path))
        return _Batch(schema=schema, table=table, path=None if in_memory else path)
    table = to_arrow(data)
    _check_columns(table.schema, "the batch")
    return _Batch(schema=table.schema, table=table, path=None)


def _check_columns(schema: pa.Schema, where: str) -> None:
    names = list(schema.names)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInputError(
            f"{where}: column {twice[0]!r} appears more than once; names must be unique",
            field=twice[0],
        )
    for name in names:
        if name.startswith(RESERVED_PREFIX) or name == REASON_COLUMN:
            raise InvalidInputError(
                f"{where}: column {name!r} is reserved for Conveyor's own bookkeeping; "
                "drop or rename it before validating (quarantined rows: drop "
                f"{REASON_COLUMN!r} before replaying them)",
                field=name,
            )


def _existing(existing: Any, schema: pa.Schema) -> pa.Table | None:
    """The stored rows' columns the batch also has, in the batch's types (UNION ALL needs them
    alike); None when there are none. A column that cannot take the batch's type is left
    out: the schema-change checks report the retyping."""
    import pyarrow as pa

    from conveyor.data.frames import to_arrow

    if existing is None:
        return None
    table = to_arrow(existing)
    columns = {}
    for name in table.column_names:
        if name not in schema.names:
            continue
        try:
            columns[name] = table.column(name).cast(schema.field(name).type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return pa.table(columns) if columns else None


def _run_custom(plans: list[Plan], table: pa.Table) -> tuple[list[Plan], pa.Table]:
    """Evaluate custom checks and attach their boolean results as columns."""
    import pyarrow as pa

    out = []
    for p in plans:
        expectation = p.expectation
        if not isinstance(expectation, Custom) or p.problem:
            out.append(p)
            continue
        view = table.select(expectation.columns) if expectation.columns else table
        try:
            passed = expectation.check(view)
        except Exception as exc:  # a broken check is a failed check, with its reason kept
            out.append(_unusable(p, f"{expectation.name} raised {type(exc).__name__}: {exc}"))
            continue
        column = _as_mask(passed, table.num_rows)
        if isinstance(column, str):
            out.append(_unusable(p, f"{expectation.name} {column}"))
            continue
        table = table.append_column(pa.field(custom_column(p.index), pa.bool_()), column)
        out.append(p)
    return out, table


def _as_mask(value: Any, rows: int) -> pa.ChunkedArray | str:
    import pyarrow as pa

    try:
        if isinstance(value, pa.ChunkedArray):
            column = value
        elif isinstance(value, pa.Array):
            column = pa.chunked_array([value])
        else:
            column = pa.chunked_array([pa.array(value)])
    except (pa.ArrowException, TypeError, ValueError) as exc:
        return f"returned {type(value).__name__}, not a boolean array: {exc}"
    if not pa.types.is_boolean(column.type):
        return f"returned an array of {column.type}, not booleans"
    if len(column) != rows:
        return f"returned {len(column):,} values for {rows:,} rows"
    return column


def _unusable(p: Plan, reason: str) -> Plan:
    return dataclasses.replace(p, failure=None, join=None, aggregates={}, problem=reason)


# -- the two passes ---------------------------------------------------------------


def _numbered(
    con: duckdb.DuckDBPyConnection, batch: _Batch, scanned: pa.Table | None
) -> tuple[str, str]:
    """A source whose rows carry their position, and the name of that column."""
    import numpy as np
    import pyarrow as pa

    if batch.path is not None:
        return f"read_parquet({literal(str(batch.path))}, file_row_number = true)", quote(
            "file_row_number"
        )
    assert scanned is not None
    positions = pa.array(np.arange(scanned.num_rows, dtype=np.int64))
    con.register(_BATCH, scanned.append_column(ROW_ID, positions))
    return quote(_BATCH), quote(ROW_ID)


def _flags(
    con: duckdb.DuckDBPyConnection, plans: list[Plan], source: str, row_id: str, where: str
) -> pa.Table:
    import pyarrow as pa

    if not any(p.failure and not p.problem for p in plans):
        return pa.table({ROW: pa.array([], pa.int64())})
    return flag_pass(con, plans, source, row_id, where)


def _checks(
    plans: list[Plan], facts: Mapping[str, Any], rows: int, schema: pa.Schema, now: datetime
) -> tuple[list[CheckResult], dict[str, int], list[str]]:
    checks: list[CheckResult] = []
    row_failures: dict[str, int] = {}
    batch_failures: list[str] = []
    for p in plans:
        expectation = p.expectation
        if p.problem:
            check = unevaluable(p, p.problem)
        elif expectation.row_level:
            failures = int(facts[p.alias] or 0)  # SUM over no rows is NULL
            check = row_check(p, failures, rows, schema)
            if expectation.severity == "error":
                row_failures[expectation.name] = failures
        else:
            check = batch_check(p, facts, rows, schema, now)
        if check.status == "fail" and (p.problem or not expectation.row_level):
            batch_failures.append(check.name)
        checks.append(check)
    return checks, row_failures, batch_failures


def _check_patterns(con: duckdb.DuckDBPyConnection, expectations: Sequence[Expectation]) -> None:
    """Python's re accepted the pattern at parse time; DuckDB runs RE2, which is stricter."""
    import duckdb

    for index, expectation in enumerate(expectations):
        if isinstance(expectation, MatchesRegex):
            try:
                con.execute("SELECT regexp_matches('', ?)", [expectation.pattern]).fetchall()
            except duckdb.Error as exc:
                raise ConfigError(
                    f"expectations[{index}].pattern: {expectation.name}: {exc} (patterns are "
                    "RE2 syntax: no look-around or back-references)",
                    field=f"expectations[{index}].pattern",
                ) from exc
