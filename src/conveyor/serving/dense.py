"""Rows of numbers kept as one float64 matrix, out of Arrow until something needs a table.

The usual request to a tabular model is a few rows of numbers whose columns are
exactly the model's. Building an Arrow table for it (one array per column) and
checking it against the signature cost about 70 us a request, and the batcher
then joined those tables and turned them back into a matrix. For such a
request the native route builds a :class:`DenseRows` instead: the rows in the
signature's column order as a float64 matrix. The batcher stacks matrices and
the matrix predictor hands the stack to the model as it is.

A version takes them only when every input of its signature is ``float64``
(:func:`dense_columns`) and it predicts from a matrix
(:func:`conveyor.serving.pool.matrix_predict`); anything else (an enricher, the
cache's digest, a shadow version of another signature, an input sample in the
event log) asks :meth:`DenseRows.to_arrow` for the table it would have had, so
behaviour is the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from conveyor.registry.signature import Signature

__all__ = ["DenseRows", "as_arrow", "dense_columns"]


class DenseRows:
    """``matrix[i, j]`` is row ``i``'s value of column ``names[j]`` (float64, no nulls)."""

    __slots__ = ("matrix", "names")

    def __init__(self, names: tuple[str, ...], matrix: np.ndarray) -> None:
        self.names = names
        self.matrix = matrix

    @property
    def num_rows(self) -> int:
        return int(self.matrix.shape[0])

    def to_arrow(self) -> pa.Table:
        """The Arrow table of these rows: one float64 column per name."""
        import pyarrow as pa

        columns = self.matrix.T
        return pa.Table.from_arrays(
            [pa.array(columns[j]) for j in range(len(self.names))], names=list(self.names)
        )

    def slice(self, offset: int = 0, length: int | None = None) -> DenseRows:
        """Rows ``offset`` to ``offset + length``, as ``pyarrow.Table.slice`` gives."""
        stop = None if length is None else offset + length
        return DenseRows(self.names, self.matrix[offset:stop])

    def to_pylist(self) -> list[dict[str, float]]:
        """One dict per row, as ``pyarrow.Table.to_pylist`` gives."""
        return [dict(zip(self.names, row, strict=True)) for row in self.matrix.tolist()]

    @classmethod
    def stack(cls, parts: Sequence[DenseRows]) -> DenseRows:
        """One :class:`DenseRows` of every part's rows, in order (all have the same names)."""
        import numpy as np

        return cls(parts[0].names, np.vstack([p.matrix for p in parts]))

    def __repr__(self) -> str:
        return f"DenseRows({self.num_rows} rows x {len(self.names)} columns)"


def dense_columns(signature: Signature | None) -> tuple[str, ...] | None:
    """The signature's input names when every input is float64 (rows of them can be dense)."""
    if signature is None or not signature.inputs:
        return None
    names = tuple(c.name for c in signature.inputs)
    if len(set(names)) != len(names):
        return None
    schema = signature.arrow_schema()
    import pyarrow as pa

    if all(pa.types.is_float64(f.type) for f in schema):
        return names
    return None


def as_arrow(rows: Any) -> Any:
    """``rows`` as an Arrow table when they are :class:`DenseRows`; anything else as it is."""
    return rows.to_arrow() if type(rows) is DenseRows else rows
