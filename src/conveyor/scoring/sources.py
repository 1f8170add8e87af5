"""What batch scoring reads: files (Parquet, CSV; local or any fsspec URL), a SQL query,
a data set version; cut into partitions with stable ids.

::

    data/customers/                 a folder: every .parquet / .csv file under it
    s3://bucket/customers.parquet   one file, through fsspec (storage_options)
    sql:postgresql://host/db        with query="SELECT ... ORDER BY id"
    dataset:customers@3             a data-layer version (project.data)

A partition is the unit that is scored, written and recorded once: a Parquet row
group (``file#rg=3``), a byte range of a CSV file (``file@0-67108864``: the lines that
*start* in it, so ranges never share a line), a part of a data set version, or the
n-th chunk of a SQL query's rows. Its id is a digest of that description, so the
same input cut the same way gives the same ids: that is what makes a re-run
idempotent and a resumed run skip what is done. Workers read their partition
themselves (a Parquet row group, a CSV range, a data set part), one chunk of
``chunk_rows`` at a time; SQL chunks are read by the coordinating process (one
cursor) and handed over.

The fingerprint identifies the input as it was read: file names, sizes and
modification times or ETags; the data set version's content hash; for SQL the URL
(without password) and the query, which cannot see the data: a query that is
resumed must return the same rows in the same order (``ORDER BY`` a key).
"""

from __future__ import annotations

import hashlib
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.project import Project

__all__ = [
    "CSV_SPLIT_BYTES",
    "Partition",
    "Source",
    "open_source",
    "read_partition",
]

#: Bytes of CSV a partition covers (the lines starting in that range).
CSV_SPLIT_BYTES = 64 * 1024 * 1024
_PARQUET = (".parquet", ".pq", ".parq")
_CSV = (".csv", ".csv.gz", ".tsv")


@dataclass(frozen=True, slots=True)
class Partition:
    """One unit of work: where its rows are, and its stable id."""

    key: str
    """What it is, readable: ``data/a.parquet#rg=3``, ``sql#chunk=5``..."""
    kind: str
    """``parquet``, ``csv``, ``dataset`` or ``inline`` (rows carried along: SQL)."""
    path: str | None = None
    index: int = 0
    start: int = 0
    end: int = 0
    rows: int | None = None
    table: Any = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]

    def without_rows(self) -> Partition:
        """This partition without the rows it carries (what is recorded)."""
        return Partition(
            self.key, self.kind, self.path, self.index, self.start, self.end, self.rows
        )


class Source(ABC):
    """An input of a batch scoring run."""

    #: What the run record and events show (never a password).
    description: str
    #: ``sql`` sources are read by the coordinator; the others by the workers.
    kind: str

    @abstractmethod
    def fingerprint(self) -> str:
        """What identifies the input's content: a resume refuses an input that changed."""

    def input_version(self) -> str | None:
        """The data set version id, when the input is one."""
        return None

    @abstractmethod
    def partitions(self, chunk_rows: int) -> Iterator[Partition]:
        """The input cut into partitions with stable ids, in order."""

    def total_rows(self) -> int | None:
        return None


# -- files ---------------------------------------------------------------------------


class FileSource(Source):
    """Parquet or CSV files: one file or every matching file under a folder."""

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        file_format: str | None = None,
        csv_split_bytes: int = CSV_SPLIT_BYTES,
    ) -> None:
        import fsspec

        if file_format not in (None, "parquet", "csv"):
            raise InvalidInputError(
                f"file format {file_format!r}: expected parquet or csv", field="format"
            )
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.description = url
        self.kind = "files"
        self.csv_split_bytes = csv_split_bytes
        try:
            fs, root = fsspec.core.url_to_fs(url, **self.storage_options)
        except (ValueError, ImportError) as exc:
            raise InvalidInputError(f"cannot read {url}: {exc}", field="input") from None
        self.fs = fs
        self.root = root
        self.files = self._list(file_format)
        self._rows: int | None = None

    def _list(self, file_format: str | None) -> list[tuple[str, str, dict[str, Any]]]:
        """``(path, format, info)`` of every input file, sorted by path."""
        try:
            if not self.fs.exists(self.root):
                raise NotFoundError(f"the input {self.url} does not exist", input=self.url)
            if self.fs.isdir(self.root):
                infos = self.fs.find(self.root, detail=True)
            else:
                infos = {self.root: self.fs.info(self.root)}
        except ConveyorError:
            raise
        except (OSError, ValueError) as exc:
            raise InvalidInputError(
                f"cannot read the input {self.url}: {exc}", field="input"
            ) from None
        found = []
        for path in sorted(infos):
            name = path.rsplit("/", 1)[-1]
            if name.startswith((".", "_")):
                continue  # _SUCCESS, _manifest.json, .crc, our own temp files
            fmt = file_format or _format_of(name)
            if fmt is None:
                continue
            found.append((path, fmt, infos[path]))
        if not found:
            raise InvalidInputError(
                f"the input {self.url} holds no Parquet or CSV file", field="input"
            )
        return found

    def fingerprint(self) -> str:
        listing = [
            [_relative(path, self.root), info.get("size"), _stamp(info)]
            for path, _, info in self.files
        ]
        return "sha256:" + hashlib.sha256(json.dumps(listing, default=str).encode()).hexdigest()

    def partitions(self, chunk_rows: int) -> Iterator[Partition]:
        import pyarrow.parquet as pq

        rows = 0
        for path, fmt, info in self.files:
            name = _relative(path, self.root) or path.rsplit("/", 1)[-1]
            url = self.fs.unstrip_protocol(path)
            if fmt == "parquet":
                try:
                    with self.fs.open(path, "rb") as handle:
                        meta = pq.ParquetFile(handle).metadata
                except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
                    raise InvalidInputError(
                        f"cannot read {name} as Parquet: {exc}", field="input", file=name
                    ) from None
                for group in range(meta.num_row_groups):
                    n = meta.row_group(group).num_rows
                    rows += n
                    yield Partition(f"{name}#rg={group}", "parquet", url, group, rows=n)
            else:
                size = int(info.get("size") or 0)
                step = max(1, self.csv_split_bytes)
                for start in range(0, max(size, 1), step):
                    end = min(size, start + step)
                    yield Partition(f"{name}@{start}-{end}", "csv", url, start=start, end=end)
        self._rows = rows if all(fmt == "parquet" for _, fmt, _ in self.files) else None

    def total_rows(self) -> int | None:
        return self._rows


def _format_of(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(_PARQUET):
        return "parquet"
    if lower.endswith(_CSV):
        return "csv"
    return None


def _relative(path: str, root: str) -> str:
    root = root.rstrip("/")
    return path[len(root) + 1 :] if path.startswith(root + "/") else ""


def _stamp(info: Mapping[str, Any]) -> Any:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return info[key]
    return None


# -- SQL ---------------------------------------------------------------------------


class SqlSource(Source):
    """A query's rows, streamed by the coordinator in chunks of ``chunk_rows``."""

    def __init__(self, url: str, query: str | None) -> None:
        from conveyor.data.sources.sql import SQLSource

        if not query:
            raise InvalidInputError(
                "a sql: input needs a query (--query 'SELECT ... ORDER BY key')", field="query"
            )
        self.url = url
        self.query = query
        self._reader = SQLSource(url, query=query)
        self.description = f"sql:{self._reader.describe()['url']}"
        self.kind = "sql"

    def fingerprint(self) -> str:
        text = json.dumps([self.description, self.query])
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def partitions(self, chunk_rows: int) -> Iterator[Partition]:
        self._reader.chunk_size = chunk_rows
        for index, table in enumerate(self._reader.iter_chunks()):
            yield Partition(
                f"sql#chunk={index}", "inline", index=index, rows=table.num_rows, table=table
            )


# -- data set versions ----------------------------------------------------------------


class DatasetSource(Source):
    """A data-layer version (``dataset:NAME@N``), one partition per stored part."""

    def __init__(self, project: Project, ref: str) -> None:
        if not ref:
            raise InvalidInputError("dataset: needs a version, dataset:NAME@N", field="input")
        self.version = project.data.versions.resolve(ref)
        self.parts = list(project.data.versions.parts(self.version))
        self.description = f"dataset:{self.version.ref}"
        self.kind = "dataset"

    def fingerprint(self) -> str:
        return str(self.version.content_hash)

    def input_version(self) -> str | None:
        return str(self.version.id)

    def partitions(self, chunk_rows: int) -> Iterator[Partition]:
        for index, part in enumerate(self.parts):
            yield Partition(
                f"{self.version.ref}#part={index}:{part.content_hash}",
                "dataset",
                self.version.id,
                index,
                rows=part.rows,
            )

    def total_rows(self) -> int | None:
        return int(self.version.row_count)


def open_source(
    project: Project,
    spec: str,
    *,
    query: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    file_format: str | None = None,
    csv_split_bytes: int = CSV_SPLIT_BYTES,
) -> Source:
    """The source ``spec`` names (see the module)."""
    if not isinstance(spec, str) or not spec:
        raise InvalidInputError(f"expected an input, got {spec!r}", field="input")
    if spec.startswith("sql:"):
        return SqlSource(spec[len("sql:") :], query)
    if query is not None:
        raise InvalidInputError("a query goes with a sql: input only", field="query")
    if spec.startswith("dataset:"):
        return DatasetSource(project, spec[len("dataset:") :])
    return FileSource(
        spec,
        storage_options=storage_options,
        file_format=file_format,
        csv_split_bytes=csv_split_bytes,
    )


# -- reading a partition (in a worker) ---------------------------------------------------


def read_partition(
    partition: Partition,
    chunk_rows: int,
    *,
    project: Project | None = None,
    storage_options: Mapping[str, Any] | None = None,
    text_columns: tuple[str, ...] = (),
) -> Iterator[pa.Table]:
    """The rows of ``partition``, ``chunk_rows`` at a time. ``text_columns`` of a CSV
    are read as text (the signature's columns: a malformed value becomes a rejected
    row, not a failed partition)."""
    if partition.kind == "inline":
        yield from _slices(partition.table, chunk_rows)
    elif partition.kind == "parquet":
        yield from _parquet(partition, chunk_rows, storage_options)
    elif partition.kind == "csv":
        yield from _slices(_csv(partition, storage_options, text_columns), chunk_rows)
    elif partition.kind == "dataset":
        if project is None:
            raise InvalidInputError("a data set partition needs the project", field="input")
        versions = project.data.versions
        version = versions.by_id(str(partition.path))
        part = list(versions.parts(version))[partition.index]
        yield from _slices(versions.read_part(part), chunk_rows)
    else:
        raise InvalidInputError(f"unknown partition kind {partition.kind!r}", field="kind")


def _slices(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    if table.num_rows == 0:
        yield table
        return
    for offset in range(0, table.num_rows, rows):
        yield table.slice(offset, rows)


def _parquet(
    partition: Partition, chunk_rows: int, storage_options: Mapping[str, Any] | None
) -> Iterator[pa.Table]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = _location(partition, storage_options)
    with fs.open(path, "rb") as handle:
        reader = pq.ParquetFile(handle)
        empty = True
        for batch in reader.iter_batches(batch_size=chunk_rows, row_groups=[partition.index]):
            empty = False
            yield pa.Table.from_batches([batch])
        if empty:
            yield reader.schema_arrow.empty_table()


def _location(partition: Partition, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    assert partition.path is not None
    return fsspec.core.url_to_fs(partition.path, **dict(storage_options or {}))  # type: ignore[no-any-return]


def _csv(
    partition: Partition,
    storage_options: Mapping[str, Any] | None,
    text_columns: tuple[str, ...],
) -> pa.Table:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    fs, path = _location(partition, storage_options)
    with fs.open(path, "rb") as handle:
        header = handle.readline()
        begin = max(partition.start, len(header))
        if begin > len(header):
            handle.seek(begin - 1)
            handle.readline()  # the line under way belongs to the previous range
        else:
            handle.seek(begin)
        position = handle.tell()
        data = handle.read(max(0, partition.end - position)) if position < partition.end else b""
        if data and not data.endswith(b"\n"):
            data += handle.readline()  # the last line started in this range: finish it
    names = [n.strip().strip('"') for n in header.decode("utf-8").rstrip("\r\n").split(",")]
    types = {name: pa.string() for name in text_columns if name in names}
    options = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    try:
        return pacsv.read_csv(io.BytesIO(header + data), convert_options=options)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(
            f"cannot read {partition.key} as CSV: {exc}", field="input", partition=partition.key
        ) from None
