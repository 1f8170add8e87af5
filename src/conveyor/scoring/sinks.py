"""Where batch scoring writes: a folder of Parquet partitions, or a table by upsert.

**Folder** (local or any fsspec URL): each partition is one file,
``part-<partition id>.parquet``, written whole and then moved into place (a local
rename, an object store's single PUT), so a reader never sees half a partition and
a partition scored twice lands on the same name. ``_manifest.json``, written last the
same way, lists every partition with its rows and sha256, the model version and the
input's fingerprint. Rejected rows go to ``rejected/part-<id>.parquet`` beside them.

**Table** (``sql:`` + a SQLAlchemy URL, ``table`` and ``key``): a partition's rows are
upserted on the key column in one transaction (``INSERT ... ON CONFLICT (key) DO
UPDATE``, PostgreSQL and SQLite), so scoring a partition again rewrites the same
rows. The table is created from the first partition's columns when it does not
exist, the key as its primary key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa
    import sqlalchemy as sa

__all__ = ["FolderSink", "PartWriter", "TableSink", "open_sink"]

MANIFEST = "_manifest.json"
REJECTED = "rejected"


class PartWriter(ABC):
    """Collects one partition's tables; :meth:`commit` makes them durable at once."""

    rows = 0

    @abstractmethod
    def write(self, table: pa.Table) -> None:
        """Add ``table``'s rows to the partition (not visible before :meth:`commit`)."""

    @abstractmethod
    def commit(self) -> tuple[str | None, str | None]:
        """``(where, sha256)`` of what was written (None, None: nothing was)."""

    @abstractmethod
    def abort(self) -> None:
        """Drop what was written (an error before commit)."""


class FolderSink:
    """Parquet partitions under a folder (local or fsspec URL)."""

    kind = "folder"

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        rejected_folder: str = REJECTED,
    ) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        #: Where rejected rows go under the folder ("" for a folder of rejected rows only).
        self.rejected_folder = rejected_folder
        self.description = self.url
        self._fs: Any = None
        self._root = ""

    def __getstate__(self) -> dict[str, Any]:  # sent to workers: the filesystem is reopened
        return {
            "url": self.url,
            "storage_options": self.storage_options,
            "rejected_folder": self.rejected_folder,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["url"], state["storage_options"], rejected_folder=state["rejected_folder"]
        )

    @property
    def fs(self) -> Any:
        if self._fs is None:
            import fsspec

            try:
                self._fs, self._root = fsspec.core.url_to_fs(self.url, **self.storage_options)
            except (ValueError, ImportError) as exc:
                raise InvalidInputError(
                    f"cannot write to {self.url}: {exc}", field="output"
                ) from None
        return self._fs

    @property
    def local(self) -> bool:
        return "file" in _protocols(self.fs)

    def prepare(self) -> None:
        """Make the folder (a file in its place is refused)."""
        fs = self.fs
        if fs.exists(self._root) and not fs.isdir(self._root):
            raise InvalidInputError(
                f"the output {self.url} is a file; give a folder", field="output"
            )
        if self.local:
            fs.makedirs(self._root, exist_ok=True)

    def path(self, name: str) -> str:
        self.fs  # noqa: B018 (resolves the root)
        return f"{self._root}/{name}"

    def writer(self, partition_id: str, *, rejected: bool = False) -> PartWriter:
        name = f"part-{partition_id}.parquet"
        if rejected and self.rejected_folder:
            name = f"{self.rejected_folder}/{name}"
        return _FileWriter(self, name)

    @property
    def rejected_url(self) -> str:
        return f"{self.url}/{self.rejected_folder}" if self.rejected_folder else self.url

    def put_bytes(self, name: str, data: bytes) -> None:
        """Write a small file whole (the manifest), atomically."""
        target = self.path(name)
        if self.local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            temp = f"{target}.{uuid.uuid4().hex}.tmp"
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        else:
            self.fs.pipe_file(target, data)

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            with self.fs.open(self.path(MANIFEST), "rb") as handle:
                return json.loads(handle.read())  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None


def _protocols(fs: Any) -> tuple[str, ...]:
    found = fs.protocol
    return (found,) if isinstance(found, str) else tuple(found)


class _FileWriter(PartWriter):
    """A Parquet file built in a local temporary file, hashed, then moved into place."""

    def __init__(self, sink: FolderSink, name: str) -> None:
        self.sink = sink
        self.name = name
        self.target = sink.path(name)
        folder = os.path.dirname(self.target) if sink.local else None
        if folder is not None:
            os.makedirs(folder, exist_ok=True)
        # Beside the target when local (the rename is atomic), in the temp folder otherwise.
        handle, self.temp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=folder)
        os.close(handle)
        self._writer: Any = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            # Dictionary encoding pays for text; on numbers (features, scores) it is a
            # wasted try that makes writing four times slower.
            text = [f.name for f in table.schema if _dictionary_worthy(f.type)]
            self._writer = pq.ParquetWriter(self.temp, table.schema, use_dictionary=text)
            self._schema = table.schema
        elif not table.schema.equals(self._schema):
            table = table.cast(self._schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def commit(self) -> tuple[str | None, str | None]:
        if self._writer is None:
            self.abort()
            return None, None
        self._writer.close()
        digest = hashlib.sha256()
        with open(self.temp, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
            if self.sink.local:
                os.fsync(handle.fileno())
        if self.sink.local:
            os.replace(self.temp, self.target)
        else:
            try:
                self.sink.fs.put_file(self.temp, self.target)
            finally:
                os.unlink(self.temp)
        return self.name, "sha256:" + digest.hexdigest()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if os.path.exists(self.temp):
            os.unlink(self.temp)


def _dictionary_worthy(kind: pa.DataType) -> bool:
    import pyarrow.types as t

    return bool(
        t.is_string(kind) or t.is_large_string(kind) or t.is_dictionary(kind) or t.is_binary(kind)
    )


class TableSink:
    """Rows upserted into a database table on a key column."""

    kind = "table"

    def __init__(self, url: str, table: str | None, key: str | None) -> None:
        from conveyor.data.sources.redaction import redact_url

        if not table or not key:
            raise InvalidInputError(
                "a sql: output needs a table and a key column (--table NAME --key COLUMN)",
                field="table" if not table else "key",
            )
        self.url = url
        self.table = table
        self.key = key
        self.description = f"sql:{redact_url(url)}#{table}"
        self._engine: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "table": self.table, "key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["table"], state["key"])  # type: ignore[misc]

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            from conveyor.data.sources.sql import SQLSource

            # The data layer's SQL source knows the drivers, timeouts and errors: its engine.
            self._engine = SQLSource(self.url, table=self.table).create_engine()
        engine: sa.Engine = self._engine
        return engine

    def prepare(self) -> None:
        import sqlalchemy as sa

        from conveyor.backends import BackendURL, unavailable

        try:
            with self.engine.connect():
                pass
        except sa.exc.DBAPIError as exc:
            raise unavailable(
                BackendURL.parse(self.url), "scoring output", str(exc.orig).splitlines()[0]
            ) from None

    def writer(self, partition_id: str, *, rejected: bool = False) -> PartWriter:
        return _TableWriter(self)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class _TableWriter(PartWriter):
    def __init__(self, sink: TableSink) -> None:
        self.sink = sink
        self.tables: list[pa.Table] = []
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.tables.append(table)
            self.rows += table.num_rows

    def abort(self) -> None:
        # nothing reached the database: the rows are only held here until commit
        self.tables.clear()
        self.rows = 0

    def commit(self) -> tuple[str | None, str | None]:
        import sqlalchemy as sa

        if not self.tables:
            return None, None
        sink = self.sink
        schema_name, _, name = sink.table.rpartition(".")
        engine = sink.engine
        target = _ensure_table(engine, self.tables[0].schema, name, schema_name or None, sink.key)
        try:
            with engine.begin() as conn:
                statement = _upsert(conn, target, sink.key)
                for table in self.tables:
                    conn.execute(statement, _records(table, sink.key))
        except sa.exc.IntegrityError as exc:
            raise InvalidInputError(
                f"the output table {sink.table!r} refused the rows: "
                f"{str(exc.orig).splitlines()[0]}",
                field="table",
            ) from None
        return sink.table, None


def _records(table: pa.Table, key: str) -> list[dict[str, Any]]:
    """Rows as dicts, the last of each key kept (one statement may not touch a row twice)."""
    rows = table.to_pylist()
    by_key = {row[key]: row for row in rows}
    return list(by_key.values()) if len(by_key) < len(rows) else rows


def _ensure_table(
    engine: Any, schema: pa.Schema, name: str, schema_name: str | None, key: str
) -> Any:
    """The output table, created from ``schema`` if missing (the key its primary key)."""
    import sqlalchemy as sa

    for attempt in range(3):
        try:
            with engine.begin() as conn:
                metadata = sa.MetaData()
                if sa.inspect(conn).has_table(name, schema=schema_name):
                    return sa.Table(name, metadata, schema=schema_name, autoload_with=conn)
                columns = [
                    sa.Column(
                        f.name, _sql_type(f.type), primary_key=f.name == key, nullable=f.name != key
                    )
                    for f in schema
                ]
                if key not in schema.names:
                    raise InvalidInputError(
                        f"the key column {key!r} is not among the output columns "
                        f"({', '.join(schema.names)})",
                        field="key",
                    )
                created = sa.Table(name, metadata, *columns, schema=schema_name)
                created.create(conn)
                return created
        except (sa.exc.ProgrammingError, sa.exc.IntegrityError):
            if attempt == 2:
                raise
            # Another worker created it between the check and the CREATE: read it back.
    raise AssertionError("unreachable")


def _sql_type(kind: pa.DataType) -> Any:
    import pyarrow.types as t
    import sqlalchemy as sa

    if t.is_boolean(kind):
        return sa.Boolean()
    if t.is_integer(kind):
        return sa.BigInteger()
    if t.is_floating(kind):
        return sa.Double()
    if t.is_timestamp(kind):
        return sa.DateTime(timezone=kind.tz is not None)
    if t.is_date(kind):
        return sa.Date()
    if t.is_list(kind) or t.is_fixed_size_list(kind) or t.is_struct(kind):
        return sa.JSON()
    return sa.Text()


def _upsert(conn: Any, target: Any, key: str) -> Any:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        raise InvalidInputError(
            f"upserting into {dialect} is not supported (PostgreSQL and SQLite are)",
            field="output",
        )
    statement = insert(target)
    updates = {c.name: statement.excluded[c.name] for c in target.columns if c.name != key}
    if not updates:
        return statement.on_conflict_do_nothing(index_elements=[key])
    return statement.on_conflict_do_update(index_elements=[key], set_=updates)


def open_sink(
    spec: str,
    *,
    table: str | None = None,
    key: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> FolderSink | TableSink:
    """The sink ``spec`` names: ``sql:URL`` (with ``table`` and ``key``) or a folder."""
    if not isinstance(spec, str) or not spec:
        raise InvalidInputError(f"expected an output, got {spec!r}", field="output")
    if spec.startswith("sql:"):
        return TableSink(spec[len("sql:") :], table, key)
    if table is not None or key is not None:
        raise InvalidInputError("table and key go with a sql: output only", field="table")
    return FolderSink(spec, storage_options)
