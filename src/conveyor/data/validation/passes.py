"""The queries DuckDB runs over a batch, and what their answers mean.

Report only (``split=False``): :func:`count_pass`, a single query. Each
row-level failure predicate is projected once as a boolean per row and
counted with ``count_if`` (about a third cheaper than ``count(*) FILTER
(WHERE ...)``), next to the rows failing any error-severity one and the
facts batch-level expectations need (``max`` of a timestamp, null counts).

Report and rows (``split=True``): every row that breaks something has to be
found anyway, so the counts come from those rows rather than from a second
full scan. :func:`flag_pass` returns the row number and the failure flags of
each such row (usually few), and :func:`facts_pass` reads only the columns
the batch-level facts need.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from conveyor.data.validation.plan import Plan
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = ["ROW", "count_pass", "counts_from_flags", "facts_pass", "flag_pass", "translated"]

#: The row-number column of :func:`flag_pass`'s answer.
ROW = "row"


def count_pass(
    con: duckdb.DuckDBPyConnection, plans: Sequence[Plan], source: str, where: str
) -> dict[str, Any]:
    """Failure counts, rows failing any error, and batch facts, in one scan."""
    live = [p for p in plans if not p.problem]
    flags = [p for p in live if p.failure]
    selects = ["count(*) AS n_rows"]
    selects += [f"count_if(c{p.index}) AS {p.alias}" for p in flags]
    errors = [f"c{p.index}" for p in flags if p.expectation.severity == "error"]
    if errors:
        selects.append(f"count_if({' OR '.join(errors)}) AS failed_rows")
    selects += [f"{sql} AS {alias}" for p in live for alias, sql in p.aggregates.items()]
    inner = ", ".join(["s.*", *(f"{p.failure} AS c{p.index}" for p in flags)])
    joins = " ".join(p.join for p in live if p.join)
    sql = f"SELECT {', '.join(selects)} FROM (SELECT {inner} FROM {source} AS s {joins}) AS s"
    return _one_row(con, sql, where)


def facts_pass(
    con: duckdb.DuckDBPyConnection, plans: Sequence[Plan], source: str, where: str
) -> dict[str, Any]:
    """The row count and the batch-level facts only (no failure predicate)."""
    selects = ["count(*) AS n_rows"]
    selects += [
        f"{sql} AS {alias}" for p in plans if not p.problem for alias, sql in p.aggregates.items()
    ]
    return _one_row(con, f"SELECT {', '.join(selects)} FROM {source} AS s", where)


def flag_pass(
    con: duckdb.DuckDBPyConnection,
    plans: Sequence[Plan],
    source: str,
    row_id: str,
    where: str,
) -> pa.Table:
    """Row number (``row_id`` of ``source``) and flag ``c<i>`` of every row breaking anything.

    Ordered by row number. A flag is TRUE where the row breaks expectation
    ``i``, FALSE or NULL where it does not.
    """
    flags = [p for p in plans if p.failure and not p.problem]
    columns = ", ".join(f"{p.failure} AS c{p.index}" for p in flags)
    joins = " ".join(p.join for p in flags if p.join)
    any_flag = " OR ".join(f"c{p.index}" for p in flags)
    sql = (
        f"SELECT * FROM (SELECT s.{row_id} AS {ROW}, {columns} FROM {source} AS s {joins}) "
        f"WHERE {any_flag} ORDER BY {ROW}"
    )
    with translated(where):
        return con.sql(sql).to_arrow_table()


def counts_from_flags(flags: pa.Table, plans: Sequence[Plan]) -> dict[str, int]:
    """What :func:`count_pass` would have counted, from :func:`flag_pass`'s rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    counts: dict[str, int] = {}
    failing_any = pa.repeat(pa.scalar(False), flags.num_rows)
    for p in plans:
        if not p.failure or p.problem:
            continue
        flag = pc.fill_null(flags.column(f"c{p.index}"), False)
        counts[p.alias] = int(pc.sum(flag).as_py() or 0)
        if p.expectation.severity == "error":
            failing_any = pc.or_(failing_any, flag)
    counts["failed_rows"] = int(pc.sum(failing_any).as_py() or 0)
    return counts


@contextmanager
def translated(where: str, **context: Any) -> Iterator[None]:
    """DuckDB's errors (a corrupt page in a file, mostly) as InvalidInputError."""
    import duckdb

    try:
        yield
    except duckdb.Error as exc:
        raise InvalidInputError(
            f"DuckDB could not validate {where}: {exc}", field="data", **context
        ) from exc


def _one_row(con: duckdb.DuckDBPyConnection, sql: str, where: str) -> dict[str, Any]:
    with translated(where):
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or ()]
        (row,) = cursor.fetchall()  # an aggregate without GROUP BY: exactly one row
    facts = dict(zip(columns, row, strict=True))
    # count_if over no rows is NULL, not 0; only freshness's max (t*) may stay NULL.
    return {k: 0 if v is None and not k.startswith("t") else v for k, v in facts.items()}
