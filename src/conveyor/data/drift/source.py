"""A table read one column at a time: an Arrow table in memory, or a Parquet file.

Profiling and drift read what they need column by column (and, for counts,
in row chunks), so a Parquet file of any length costs one column's memory
at a time. A pandas or polars frame is converted to Arrow once
(:func:`conveyor.data.frames.to_arrow`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import IntegrityError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

__all__ = ["TableSource", "is_path"]


def is_path(data: Any) -> bool:
    return isinstance(data, str | os.PathLike)


@dataclass(frozen=True, slots=True)
class _FileStamp:
    size: int
    mtime_ns: int


class TableSource:
    """Columns of one table, read on demand.

    ``role`` ("reference", "current", "data") names the input in errors.
    A Parquet source remembers the file's size and modification time;
    :meth:`verify` raises if the file changed since it was opened, so a
    detector fitted on a file never silently compares against other data.
    """

    def __init__(
        self,
        *,
        role: str,
        table: pa.Table | None = None,
        path: Path | None = None,
    ) -> None:
        self.role = role
        self._table = table
        self.path = path
        self._stamp: _FileStamp | None = None
        self._local = threading.local()
        if path is not None:
            self._stamp = self._stat()
            reader = self._parquet()
            self.schema: pa.Schema = reader.schema_arrow
            self.num_rows: int = reader.metadata.num_rows
        elif table is not None:
            self.schema = table.schema
            self.num_rows = table.num_rows
        else:  # pragma: no cover - the constructors below always pass one
            raise InvalidInputError(f"{role}: no table and no path", field=role)

    @classmethod
    def open(cls, data: Any, *, role: str) -> TableSource:
        """A source over a pyarrow Table, a pandas/polars frame or a Parquet path."""
        if isinstance(data, TableSource):
            return data
        if is_path(data):
            return cls(role=role, path=Path(os.fspath(data)))
        from conveyor.data.frames import to_arrow

        try:
            table = to_arrow(data)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"{role}: {exc.message}; or pass the path of a Parquet file", field=role
            ) from exc
        return cls(role=role, table=table)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_local"]  # open readers belong to threads, not to a pickle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    @property
    def names(self) -> list[str]:
        return list(self.schema.names)

    @property
    def where(self) -> str:
        """How errors name this input: the file, or the role of the in-memory table."""
        return str(self.path) if self.path is not None else f"the {self.role} table"

    def column(self, name: str) -> pa.ChunkedArray:
        """One whole column."""
        if self._table is not None:
            return self._table.column(name)
        try:
            return self._parquet().read(columns=[name], use_threads=True).column(0)
        except (OSError, ValueError) as exc:
            raise self._unreadable(exc, column=name) from exc

    def chunks(self, name: str, chunk_rows: int) -> Iterator[pa.Array]:
        """One column in pieces of at most ``chunk_rows`` rows."""
        if self._table is not None:
            column = self._table.column(name)
            for start in range(0, max(self.num_rows, 1), chunk_rows):
                piece = column.slice(start, chunk_rows)
                yield from piece.chunks
            return
        try:
            for batch in self._parquet(dictionary=True).iter_batches(
                batch_size=chunk_rows, columns=[name], use_threads=True
            ):
                yield batch.column(0)
        except (OSError, ValueError) as exc:
            raise self._unreadable(exc, column=name) from exc

    def verify(self) -> None:
        """Raise :class:`IntegrityError` if the Parquet file changed since it was opened."""
        if self.path is None or self._stamp is None:
            return
        if self._stat() != self._stamp:
            raise IntegrityError(
                f"{self.path} changed since the detector was fitted on it: fit again on the "
                "new reference, or restore the file",
                path=str(self.path),
            )

    # -- Parquet --------------------------------------------------------------

    def _stat(self) -> _FileStamp:
        assert self.path is not None
        try:
            st = self.path.stat()
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"{self.role}: no file at {self.path}", path=str(self.path)
            ) from exc
        except OSError as exc:
            raise InvalidInputError(
                f"{self.role}: cannot read {self.path}: {exc}", path=str(self.path)
            ) from exc
        if not self.path.is_file():
            raise InvalidInputError(
                f"{self.role}: {self.path} is not a file (pass one Parquet file)",
                path=str(self.path),
            )
        return _FileStamp(st.st_size, st.st_mtime_ns)

    def _parquet(self, dictionary: bool = False) -> pq.ParquetFile:
        """This thread's reader of the file (pyarrow's readers are not shared across threads).

        With ``dictionary`` the string columns are read dictionary-encoded,
        as Parquet usually stores them: counting their values is then a
        bincount of small integers.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        assert self.path is not None
        readers: dict[bool, pq.ParquetFile] = self._local.__dict__.setdefault("readers", {})
        reader = readers.get(dictionary)
        if reader is not None:
            return reader
        strings = None
        if dictionary:
            strings = [f.name for f in self.schema if _is_string(f.type)]
        try:
            reader = pq.ParquetFile(self.path, read_dictionary=strings or None)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise self._unreadable(exc) from exc
        readers[dictionary] = reader
        return reader

    def _unreadable(self, exc: Exception, column: str | None = None) -> InvalidInputError:
        where = f"column {column!r} of " if column else ""
        context: dict[str, Any] = {"path": str(self.path)}
        if column:
            context["column"] = column
        return InvalidInputError(
            f"{self.role}: cannot read {where}{self.path} as Parquet: {exc}", **context
        )


def _is_string(dtype: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype))
