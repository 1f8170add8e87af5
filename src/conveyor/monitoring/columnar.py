"""The columnar copy of the event log: its columns, its files and where they go.

Every event becomes one row of a Parquet file::

    <artifacts root>/events/kind=prediction/date=2026-12-04/hour=07/<first_seq>-<last_seq>.parquet

partitioned by kind and by the hour of the event's time (UTC); a file holds the
events of one compaction batch that fall in its partition, sorted by ``seq``, and is
named after the first and last ``seq`` it holds (twelve digits or more, so names sort
by seq). The columns are the event's own (``seq``, ``id``, ``time_us``, ``kind``,
``subject``, ``subject_version``, ``request_id``, ``trace_id``, ``actor``), the
payload as JSON text, and the payload fields monitors read most, *promoted* to typed
columns (:data:`PROMOTED`): a payload without the field, or with a value of another
type, gives null there (the JSON text keeps the original).

Rows arrive as the event log's scan gives them (:func:`to_table`); DuckDB parses the
payloads in one vectorised pass.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = [
    "EVENT_COLUMNS",
    "FOLDER",
    "HOUR_US",
    "PROMOTED",
    "file_name",
    "load_rows",
    "parse_file_name",
    "partition_folder",
    "schema",
    "to_table",
    "write_durably",
]

#: The folder of the copy, under the artifact store's root.
FOLDER = "events"
HOUR_US = 3_600_000_000

#: The event's columns, in the order the event log's scan returns them (payload last).
EVENT_COLUMNS: tuple[str, ...] = (
    "seq",
    "id",
    "time_us",
    "kind",
    "subject",
    "subject_version",
    "request_id",
    "trace_id",
    "actor",
    "payload",
)

#: Payload fields copied to typed columns (DuckDB type names). ``version_id`` ... ``rows``
#: are every prediction's (serving's ``prediction`` kind); ``status`` is a shadow copy's
#: (``prediction.shadow``), and where a kind that records failures would put them.
PROMOTED: dict[str, str] = {
    "version_id": "VARCHAR",
    "arm": "VARCHAR",
    "flag": "VARCHAR",
    "latency_ms": "DOUBLE",
    "cached": "BOOLEAN",
    "rows": "BIGINT",
    "status": "VARCHAR",
    # A failed request's error code (prediction.failed, whose status is the HTTP status).
    "code": "VARCHAR",
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ROW_GROUP = 128 * 1024  # rows: small enough for time pruning inside an hour's file


def schema() -> pa.Schema:
    """The Arrow schema of a file of the copy."""
    import pyarrow as pa

    text = pa.string()
    arrow = {
        "VARCHAR": text,
        "DOUBLE": pa.float64(),
        "BOOLEAN": pa.bool_(),
        "BIGINT": pa.int64(),
    }
    fields = [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("id", text, nullable=False),
        pa.field("time_us", pa.int64(), nullable=False),
        pa.field("kind", text, nullable=False),
        *(pa.field(name, text) for name in EVENT_COLUMNS[4:9]),
        pa.field("payload", text, nullable=False),
        *(pa.field(name, arrow[kind]) for name, kind in PROMOTED.items()),
    ]
    return pa.schema(fields)


def _raw_types() -> list[pa.DataType]:
    import pyarrow as pa

    return [pa.int64(), pa.string(), pa.int64(), *([pa.string()] * 7)]


def to_table(rows: Sequence[tuple[Any, ...]], con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Scanned rows (``seq``, the event's columns, payload JSON text) as a table of
    :func:`schema`, in the same order."""
    import pyarrow as pa

    names = EVENT_COLUMNS
    types = _raw_types()
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
    raw = pa.table(
        {
            name: pa.array(values, type=kind)
            for name, values, kind in zip(names, columns, types, strict=True)
        }
    )
    con.register("_raw", raw)
    try:
        table = con.sql(_promoting("_raw")).to_arrow_table()
    finally:
        con.unregister("_raw")
    return table.cast(schema())


def _promoting(source: str) -> str:
    """SELECT every column of ``source`` and the promoted payload fields."""
    shape = "{" + ",".join(f'"{name}":"{kind}"' for name, kind in PROMOTED.items()) + "}"
    promoted = ", ".join(f'j."{name}"::{kind} AS "{name}"' for name, kind in PROMOTED.items())
    # from_json yields null for a missing field or a value it cannot convert.
    return (
        f"SELECT * EXCLUDE (j), {promoted} FROM "
        f"(SELECT *, from_json(payload, '{shape}') AS j FROM {source})"
    )


#: DuckDB types of the event's columns, in scan order.
_DUCKDB_TYPES = ("BIGINT", "VARCHAR", "BIGINT", *(["VARCHAR"] * 7))


def load_rows(rows: Sequence[tuple[Any, ...]], con: duckdb.DuckDBPyConnection, name: str) -> int:
    """Scanned rows as the DuckDB temporary table ``name``, with :func:`schema`'s columns.

    Through newline-delimited JSON rather than Arrow: building Arrow arrays from Python
    objects makes pyarrow import pandas (half a second), which a query that reads a
    short tail should not pay. Returns the number of rows."""
    import tempfile

    import orjson

    columns = ", ".join(
        f"'{column}': '{kind}'" for column, kind in zip(EVENT_COLUMNS, _DUCKDB_TYPES, strict=True)
    )
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as lines:
        lines.writelines(
            orjson.dumps(
                dict(zip(EVENT_COLUMNS, row, strict=True)), option=orjson.OPT_APPEND_NEWLINE
            )
            for row in rows
        )
        lines.flush()
        source = f"read_json('{lines.name}', format = 'newline_delimited', columns = {{{columns}}})"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {_promoting(source)}")
    return len(rows)


def partition_folder(kind: str, hour_us: int) -> str:
    """``events/kind=K/date=YYYY-MM-DD/hour=HH`` of the hour starting at ``hour_us``."""
    hour = _EPOCH + timedelta(microseconds=hour_us)
    return f"{FOLDER}/kind={kind}/date={hour:%Y-%m-%d}/hour={hour:%H}"


def file_name(first_seq: int, last_seq: int) -> str:
    return f"{first_seq:012d}-{last_seq:012d}.parquet"


def parse_file_name(name: str) -> tuple[int, int] | None:
    """``(first_seq, last_seq)`` of a file of the copy; None for any other name."""
    stem, dot, ext = name.partition(".")
    if ext != "parquet" or not dot:
        return None
    first, dash, last = stem.partition("-")
    if not dash or not first.isdigit() or not last.isdigit():
        return None
    return int(first), int(last)


def write_durably(table: pa.Table, path: Path) -> int:
    """Write ``table`` to ``path`` so that it is there whole or not at all, even after a
    power cut: a temporary name in the same folder, fsync, rename, fsync the folder.
    Returns the file's size. A file already at ``path`` is replaced."""
    import pyarrow.parquet as pq

    _make_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=_ROW_GROUP)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path.stat().st_size


def _make_folder(folder: Path) -> None:
    """``folder`` and its missing parents, each one's entry made durable in its parent."""
    missing = []
    at = folder
    while not at.exists():
        missing.append(at)
        at = at.parent
    folder.mkdir(parents=True, exist_ok=True)
    for made in missing:
        _fsync_folder(made.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
