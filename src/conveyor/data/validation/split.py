"""Dividing a batch into valid and invalid rows, given the failing rows' flags.

The flags come from :func:`conveyor.data.validation.passes.flag_pass`: the
row numbers that break something, in order, with one boolean per
expectation. Reasons are joined in Arrow (never a loop over rows), and the
rows themselves are moved with ``take`` and ``filter``. A Parquet file is
read one row group at a time, each divided before the next is read, so the
peak is the divided batch plus one row group, not the batch twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.data.validation.passes import ROW
from conveyor.data.validation.plan import Plan
from conveyor.data.validation.result import REASON_COLUMN, REASON_SEPARATOR
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["divide"]


def divide(
    flags: pa.Table, plans: Sequence[Plan], *, table: pa.Table | None, path: Path | None
) -> tuple[pa.Table, pa.Table]:
    """(valid, invalid) rows of ``table``, or of the Parquet file at ``path``.

    ``invalid`` holds the rows breaking an error-severity expectation, with
    the names of those expectations in :data:`REASON_COLUMN`.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    errors = [p for p in plans if p.failure and not p.problem and p.expectation.severity == "error"]
    marks = [pc.fill_null(flags.column(f"c{p.index}"), False) for p in errors]
    failing = pa.repeat(pa.scalar(False), flags.num_rows)
    for mark in marks:
        failing = pc.or_(failing, mark)
    positions = flags.column(ROW).filter(failing).to_numpy().astype("int64")
    none = pa.scalar(None, pa.string())
    named = [
        pc.if_else(m, pa.scalar(p.expectation.name), none).filter(failing)
        for m, p in zip(marks, errors, strict=True)
    ]
    reasons = (
        pc.binary_join_element_wise(*named, REASON_SEPARATOR, null_handling="skip")
        if named
        else pa.array([], pa.string())
    )
    if table is not None:
        valid, invalid = _divide_table(table, positions)
    elif path is not None:
        valid, invalid = _divide_file(path, positions)
    else:
        raise ValueError("divide needs a table or a path")
    return valid, invalid.append_column(REASON_COLUMN, reasons)


def _divide_table(table: pa.Table, positions: np.ndarray) -> tuple[pa.Table, pa.Table]:
    import numpy as np
    import pyarrow as pa

    if not len(positions):
        return table, table.schema.empty_table()
    keep = np.ones(table.num_rows, dtype=bool)
    keep[positions] = False
    return table.filter(pa.array(keep)), table.take(pa.array(positions))


def _divide_file(path: Path, positions: np.ndarray) -> tuple[pa.Table, pa.Table]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        schema = file.schema_arrow
        valid_parts, invalid_parts = [], []
        start = 0
        for group in range(file.num_row_groups):
            rows = file.read_row_group(group)
            end = start + rows.num_rows
            lo, hi = np.searchsorted(positions, [start, end])
            part_valid, part_invalid = _divide_table(rows, positions[lo:hi] - start)
            valid_parts.append(part_valid)
            invalid_parts.append(part_invalid)
            start = end
            del rows
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInputError(
            f"{path} is not a readable Parquet file: {exc}", field="data", path=str(path)
        ) from exc
    valid = pa.concat_tables(valid_parts) if valid_parts else schema.empty_table()
    invalid = pa.concat_tables(invalid_parts) if invalid_parts else schema.empty_table()
    return valid, invalid
