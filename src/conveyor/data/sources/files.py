"""Files on disk: CSV (one file) and Parquet (one file or a folder of them).

Bad files fail with the file named: a CSV in the wrong encoding names the
byte offset and line of the first undecodable byte, a corrupt Parquet file
is named among the folder's files, and a missing column lists the ones the
file has.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.data.sources.base import BaseSource, Extract
from conveyor.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["CSVSource", "ParquetSource"]

_CHUNK = 1 << 20


class CSVSource(BaseSource):
    """One CSV file, read by pyarrow's multithreaded parser.

    ``column_types`` maps columns to Arrow type names (``"int64"``,
    ``"timestamp[us, tz=UTC]"``, ``"decimal128(12, 2)"``); other columns'
    types are inferred. Every declared column must exist in the file.
    """

    kind = "csv"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encoding: str = "utf-8",
        delimiter: str = ",",
        column_types: Mapping[str, str] | None = None,
        watermark_column: str | None = None,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        try:
            self.encoding = codecs.lookup(encoding).name
        except LookupError:
            raise InvalidInputError(
                f"CSV source {self.path}: unknown encoding {encoding!r} "
                "(for example utf-8, latin-1, cp1252)",
                field="encoding",
            ) from None
        if len(delimiter) != 1:
            raise InvalidInputError(
                f"CSV source {self.path}: the delimiter must be one character, got {delimiter!r}",
                field="delimiter",
            )
        self.delimiter = delimiter
        self.column_types: dict[str, str] = dict(column_types or {})
        self.watermark_column = watermark_column
        self.name = name or self.path.stem
        if self.column_types:
            from conveyor.data.sources.tables import arrow_type

            for column, type_name in self.column_types.items():
                arrow_type(type_name, column=column)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "path": str(self.path),
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "column_types": dict(self.column_types) or None,
            "watermark_column": self.watermark_column,
        }

    def _where(self) -> str:
        return f"CSV file {self.path}"

    def read(self, *, after: Any | None = None) -> Extract:
        self._check_after(after)
        table = self._read_table()
        from conveyor.data.sources.tables import require_columns

        require_columns(table.schema, list(self.column_types), where=self._where())
        return self._extract(table, after=after, filtered=False)

    def _read_table(self) -> pa.Table:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        from conveyor.data.sources.tables import arrow_type

        _require_file(self.path, "CSV")
        types = {c: arrow_type(t, column=c) for c, t in self.column_types.items()}
        try:
            table = pcsv.read_csv(
                self.path,
                read_options=pcsv.ReadOptions(encoding=self.encoding),
                parse_options=pcsv.ParseOptions(delimiter=self.delimiter),
                convert_options=pcsv.ConvertOptions(column_types=types),
            )
        except UnicodeDecodeError as exc:
            raise self._encoding_error() or self._unreadable(exc) from exc
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            if "utf8" in str(exc).lower() or "utf-8" in str(exc).lower():
                raise self._encoding_error() or self._unreadable(exc) from exc
            raise self._unreadable(exc) from exc
        except OSError as exc:
            raise self._unreadable(exc) from exc
        # pyarrow infers ``binary`` for a text column that is not valid UTF-8
        # rather than failing: treat that as the encoding error it is.
        undeclared_binary = [
            f.name
            for f in table.schema
            if (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
            and f.name not in types
        ]
        if undeclared_binary:
            error = self._encoding_error(undeclared_binary[0])
            if error is not None:
                raise error
        return table

    def _unreadable(self, exc: BaseException) -> InvalidInputError:
        return InvalidInputError(
            f"CSV file {self.path} cannot be parsed: {exc}", file=str(self.path)
        )

    def _encoding_error(self, column: str | None = None) -> InvalidInputError | None:
        """The first byte of the file that is not valid text in the declared encoding."""
        found = _first_undecodable(self.path, self.encoding)
        if found is None:
            return None
        offset, line, byte = found
        in_column = f" in column {column!r}" if column else ""
        return InvalidInputError(
            f"CSV file {self.path} is not valid {self.encoding} text: byte 0x{byte:02x} at "
            f"offset {offset} (line {line}){in_column}; set encoding to the file's encoding "
            "(for example encoding='latin-1' or 'cp1252')",
            file=str(self.path),
            encoding=self.encoding,
            offset=offset,
            line=line,
        )


def _first_undecodable(path: Path, encoding: str) -> tuple[int, int, int] | None:
    """(byte offset, 1-based line, byte value) of the first undecodable byte, or None."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    consumed = 0
    newlines = 0
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            final = not chunk
            # The decoder holds back the start of a sequence split across
            # chunks; error positions count from those held-back bytes.
            state = decoder.getstate()
            pending = state[0] if isinstance(state[0], bytes) else b""
            try:
                decoder.decode(chunk, final=final)
            except UnicodeDecodeError as exc:
                offset = consumed - len(pending) + exc.start
                within = max(offset - consumed, 0)
                line = newlines + chunk[:within].count(b"\n") + 1
                data = pending + chunk
                return offset, line, data[exc.start]
            if final:
                return None
            consumed += len(chunk)
            newlines += chunk.count(b"\n")


class ParquetSource(BaseSource):
    """A Parquet file, or a folder of them (read recursively, hidden files skipped).

    The watermark filter is pushed down to the Parquet reader, so row groups
    whose statistics show nothing newer are not read at all. Files may
    differ in schema as long as their types can be reconciled (a column
    added later is null in older files).
    """

    kind = "parquet"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        columns: Sequence[str] | None = None,
        watermark_column: str | None = None,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        if isinstance(columns, str):
            raise InvalidInputError(
                f"Parquet source {self.path}: columns must be a list of names, got {columns!r}",
                field="columns",
            )
        self.columns: list[str] | None = list(columns) if columns is not None else None
        self.watermark_column = watermark_column
        self.name = name or self.path.stem

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "path": str(self.path),
            "columns": list(self.columns) if self.columns is not None else None,
            "watermark_column": self.watermark_column,
        }

    def _where(self) -> str:
        return f"Parquet source {self.path}"

    def files(self) -> list[Path]:
        """The Parquet files this source reads, in a stable order."""
        if self.path.is_file():
            return [self.path]
        if not self.path.exists():
            raise NotFoundError(f"Parquet source {self.path} does not exist", path=str(self.path))
        found = sorted(
            p
            for p in self.path.rglob("*")
            if p.is_file()
            and not any(part.startswith((".", "_")) for part in p.relative_to(self.path).parts)
        )
        if not found:
            raise NotFoundError(
                f"Parquet source {self.path} is a folder with no data files in it",
                path=str(self.path),
            )
        return found

    def read(self, *, after: Any | None = None) -> Extract:
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        from conveyor.data.sources.tables import require_columns, watermark_scalar

        self._check_after(after)
        files = self.files()
        schema = _unified_schema(files, where=self._where())
        column = self.watermark_column
        wanted = list(self.columns) if self.columns is not None else list(schema.names)
        read_columns = wanted + ([column] if column is not None and column not in wanted else [])
        require_columns(schema, read_columns, where=self._where())
        condition = None
        if column is not None and after is not None:
            bound = watermark_scalar(
                schema.field(column).type, after, column=column, where=self._where()
            )
            condition = pc.field(column) > bound
        dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
        table = _scan(dataset, files, read_columns, condition, schema)
        extract = self._extract(table, after=after, filtered=True, details={"files": len(files)})
        if len(read_columns) != len(wanted):
            # The watermark column was read only to compute the new watermark.
            return Extract(extract.table.select(wanted), extract.source, extract.watermark)
        return extract


def _unified_schema(files: Sequence[Path], *, where: str) -> pa.Schema:
    """One schema for all the files, reading only their footers; names a file that is bad."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conveyor.data.sources.tables import unified_schema

    schemas = []
    for path in files:
        try:
            schemas.append(pq.read_schema(path))
        except (pa.ArrowException, OSError) as exc:
            raise _corrupt(path, exc) from exc
    return unified_schema(schemas, [f"file {path}" for path in files], where=where)


def _scan(
    dataset: Any, files: Sequence[Path], columns: list[str], condition: Any, schema: pa.Schema
) -> pa.Table:
    import pyarrow as pa
    import pyarrow.dataset as ds

    try:
        table: pa.Table = dataset.to_table(columns=columns, filter=condition)
        return table
    except (pa.ArrowException, OSError) as exc:
        # The scanner does not say which file failed: find it.
        for path in files:
            try:
                ds.dataset(str(path), schema=schema, format="parquet").to_table(
                    columns=columns, filter=condition
                )
            except (pa.ArrowException, OSError) as inner:
                raise _corrupt(path, inner) from exc
        raise _corrupt(files[0].parent if len(files) > 1 else files[0], exc) from exc


def _corrupt(path: Path, exc: BaseException) -> InvalidInputError:
    return InvalidInputError(
        f"Parquet file {path} is corrupt or not Parquet: {exc}", file=str(path)
    )


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise NotFoundError(f"{what} file {path} does not exist", file=str(path))
    if not path.is_file():
        raise InvalidInputError(f"{what} source {path} is not a file", file=str(path))
