"""Arrow inside, pandas and polars at the API.

Every function of the data layer works on a :class:`pyarrow.Table`;
:func:`to_arrow` accepts what users hold (a pandas or polars DataFrame, an
Arrow table, record batches, a dict of columns) and :func:`from_arrow` gives
back the kind they asked for. Conversions are zero-copy where the libraries
allow it; pandas and polars are imported only when such an object is seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FrameKind", "from_arrow", "kind_of", "to_arrow"]

FrameKind = Literal["arrow", "pandas", "polars"]


def kind_of(data: Any) -> FrameKind:
    """Which kind of frame ``data`` is, so a result can be returned in kind."""
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return "pandas"
    if module == "polars":
        return "polars"
    return "arrow"


def to_arrow(data: Any) -> pa.Table:
    """An Arrow table from a pandas/polars DataFrame, Arrow table/batches or a dict of columns."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            # preserve_index=False: a RangeIndex is not data; a named index is kept as a column.
            has_named_index = any(name is not None for name in data.index.names)
            frame = data.reset_index() if has_named_index else data
            return pa.Table.from_pandas(frame, preserve_index=False)
    if module == "polars":
        return data.to_arrow()
    if isinstance(data, Mapping):
        try:
            return pa.table(dict(data))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise InvalidInputError(
                f"cannot build a table from these columns: {exc}", field="data"
            ) from exc
    if isinstance(data, Sequence) and data and all(isinstance(r, Mapping) for r in data):
        return pa.Table.from_pylist(list(data))
    raise InvalidInputError(
        f"expected a pandas or polars DataFrame, a pyarrow Table or a dict of columns, "
        f"got {type(data).__module__}.{type(data).__name__}",
        field="data",
    )


def from_arrow(table: pa.Table, kind: FrameKind = "arrow") -> Any:
    """``table`` as the requested kind of frame."""
    if kind == "arrow":
        return table
    if kind == "pandas":
        return table.to_pandas()
    if kind == "polars":
        import polars as pl

        return pl.from_arrow(table)
    raise InvalidInputError(f"unknown frame kind {kind!r}: arrow, pandas or polars", field="kind")
