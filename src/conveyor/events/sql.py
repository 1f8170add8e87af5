"""``SqlEventLog``: the event log in SQLite or PostgreSQL (the ``events`` table).

Reads go straight to the database; on SQLite they use deferred transactions
so they never queue behind the writer. ``seq`` (the insertion order) is the
key every page and ``follow`` walks.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from conveyor.backends import BackendURL
from conveyor.errors import InvalidInputError
from conveyor.events.filters import Filters, decode_seq_cursor, encode_seq_cursor
from conveyor.events.follow import Follower
from conveyor.events.log import EventLog, open_writer
from conveyor.events.schema import Event
from conveyor.events.table import COLUMNS, insert_statement
from conveyor.events.table import events as TABLE
from conveyor.events.writer import BatchWriter, Row
from conveyor.store.engine import READ, create_engine, sqlite_connection, translate_errors
from conveyor.store.migrate import current_revision, head_revision, upgrade
from conveyor.store.paging import Page, check_limit

__all__ = ["MIGRATIONS", "VERSION_TABLE", "SqlEventLog"]

MIGRATIONS = "conveyor.events:migrations"
VERSION_TABLE = "conveyor_events_version"
_SEAM = "events"
_SELECT = [TABLE.c.seq, *(TABLE.c[name] for name in COLUMNS)]


class SqlEventLog(EventLog):
    """The event log in one SQL table. Open it with ``EventLog.from_url("sqlite:///...")``."""

    def __init__(
        self,
        url: BackendURL,
        engine: Engine,
        writer: BatchWriter,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._pg = engine.dialect.name == "postgresql"
        #: SQLite: the writer thread's own connection and statements.
        self._batches: _SqliteBatches | None = None
        super().__init__(url, writer, engine.dispose if release is None else release)

    @classmethod
    def from_url(
        cls,
        url: BackendURL | str,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        max_buffer: int = 100_000,
        migrate: bool = True,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> SqlEventLog:
        """Open the log at ``url`` (``sqlite:///path.db`` or ``postgresql://...``).

        ``batch_size`` rows at most per transaction; a batch is committed every
        ``flush_interval`` seconds or as soon as it is full. At most
        ``max_buffer`` events wait in memory: beyond that, writers block until
        the background thread has made room (back-pressure), except telemetry
        (:meth:`record` of a ``telemetry`` kind), which goes to spill segments
        in ``spill_dir`` meanwhile, or is shed and counted without one.
        ``migrate`` brings the tables to the current schema (safe from several
        processes at once). Raises :class:`BackendUnavailableError` if the database
        cannot be reached.
        """
        url = BackendURL.parse(url)
        if url.scheme == "sqlite" and url.location in ("", ":memory:"):
            raise InvalidInputError(
                f"{url}: the event log needs a database file (sqlite:///path/events.db): "
                "an in-memory SQLite database cannot be shared by the writer thread and readers",
                field="url",
            )
        options: dict[str, Any] = {}
        if url.scheme == "postgresql":
            options["json_deserializer"] = orjson.loads
        engine = create_engine(url, _SEAM, **options)
        try:
            with translate_errors(url, _SEAM):
                if migrate:
                    upgrade(engine, MIGRATIONS, VERSION_TABLE)
                else:
                    with engine.connect() as conn:
                        conn.execution_options(**READ)  # SQLite: no write lock for a probe
                        conn.execute(sa.text("SELECT 1"))
        except BaseException:
            engine.dispose()
            raise
        insert = insert_statement(engine.dialect.name)
        batches = _SqliteBatches(engine, insert) if engine.dialect.name == "sqlite" else None

        def release() -> None:
            if batches is not None:
                batches.close()
            engine.dispose()

        if batches is not None:

            def write(rows: list[Row]) -> None:
                with translate_errors(url, _SEAM):
                    batches(rows)

        else:

            def write(rows: list[Row]) -> None:
                with translate_errors(url, _SEAM), engine.begin() as conn:
                    conn.execute(insert, rows)

        writer = open_writer(
            url,
            write,
            refused=_refused,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_buffer=max_buffer,
            spill_dir=spill_dir,
        )
        log = cls(url, engine, writer, release)
        log._batches = batches
        return log

    # -- health -----------------------------------------------------------------

    def ping(self) -> None:
        self._read(lambda conn: conn.execute(sa.text("SELECT 1")))

    def health(self) -> dict[str, Any]:
        self._check_open()
        with translate_errors(self.url, _SEAM), self._engine.connect() as conn:
            conn.execution_options(**READ)
            revision = current_revision(conn, VERSION_TABLE)
        head = head_revision(MIGRATIONS)
        return {
            "seam": _SEAM,
            "backend": self.url.scheme,
            "url": str(self.url),
            "revision": revision,
            "head": head,
            "migrated": revision == head,
            **self.stats(),
            "spill_dir": str(self._writer.spill.folder) if self._writer.spill else None,
        }

    def query(
        self,
        *,
        kind: str | Sequence[str] | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        request_id: str | None = None,
        actor: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        descending: bool = False,
    ) -> Page[Event]:
        check_limit(limit)
        filters = Filters(kind, subject, since, until, request_id, actor)
        seq = TABLE.c.seq
        clauses = filters.clauses()
        if cursor is not None:
            after = decode_seq_cursor(cursor, descending)
            clauses.append(seq < after if descending else seq > after)
        stmt = (
            sa.select(*_SELECT)
            .where(*clauses)
            .order_by(seq.desc() if descending else seq)
            .limit(limit + 1)
        )
        rows = self._read(lambda conn: conn.execute(stmt).all())
        items = [Event.from_row(*row[1:]) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_seq_cursor(rows[limit - 1][0], descending)
        return Page(items, next_cursor)

    def count(
        self,
        *,
        kind: str | Sequence[str] | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        request_id: str | None = None,
        actor: str | None = None,
    ) -> int:
        filters = Filters(kind, subject, since, until, request_id, actor)
        stmt = sa.select(sa.func.count()).select_from(TABLE).where(*filters.clauses())
        return int(self._read(lambda conn: conn.execute(stmt).scalar_one()))

    def follow(
        self,
        *,
        poll_interval: float = 0.5,
        after: Event | None = None,
        idle_timeout: float | None = None,
        late_window: float = 10.0,
        kind: str | Sequence[str] | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        request_id: str | None = None,
        actor: str | None = None,
    ) -> Iterator[Event]:
        self._check_open()
        if not poll_interval > 0 or late_window < 0:
            raise InvalidInputError(
                f"follow needs poll_interval > 0 and late_window >= 0, got {poll_interval!r} "
                f"and {late_window!r}",
                field="poll_interval",
            )
        if after is not None and not isinstance(after, Event):
            raise InvalidInputError(
                f"after must be an Event, got {type(after).__name__}", field="after"
            )
        filters = Filters(kind, subject, since, None, request_id, actor)
        with translate_errors(self.url, _SEAM):
            follower = Follower(
                self._snapshot,
                filters.clauses(),
                check_open=self._check_open,
                poll_interval=poll_interval,
                idle_timeout=idle_timeout,
                late_window=late_window,
                after=None if after is None else after.id,
            )
        return self._translated(iter(follower))

    def erase(self, field: str, value: Any) -> int:
        from conveyor.events.erase import erase_where, holds

        self.flush()
        subject = f"{field}:{value}"
        with translate_errors(self.url, _SEAM):
            return erase_where(
                self._engine,
                lambda payload, subj: subj == subject or holds(payload, field, value),
                str(value),
            )

    # -- bulk reads in seq order (a columnar copy of the log: conveyor.monitoring) ------------

    def settled_seq(self, *, after: int = 0, timeout: float = 10.0) -> int:
        """The highest ``seq`` at or below which every event is committed or never will be
        (PostgreSQL commits out of seq order; see ``scan.py``); never below ``after``.

        Waits for the write transactions in progress, at most ``timeout`` seconds."""
        from conveyor.events.scan import settled_seq

        self._check_open()
        with translate_errors(self.url, _SEAM), self._engine.connect() as conn:
            conn.execution_options(**READ)
            return settled_seq(conn, after=after, timeout=timeout)

    def scan(
        self,
        *,
        after: int,
        through: int | None = None,
        limit: int | None = None,
        kind: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[Any, ...]]:
        """Raw rows with ``after < seq <= through`` in seq order, at most ``limit``:
        tuples of ``scan.SCAN_COLUMNS`` (``seq``, the event's columns, the payload as JSON
        text), for bulk readers that page by seq."""
        from conveyor.events.scan import scan

        filters = Filters(kind, None, since, until, None, None)
        return self._read(  # type: ignore[no-any-return]
            lambda conn: scan(conn, after=after, through=through, limit=limit, filters=filters)
        )

    def _translated(self, it: Iterator[Event]) -> Iterator[Event]:
        with translate_errors(self.url, _SEAM):
            yield from it

    def _snapshot(self) -> AbstractContextManager[Connection]:
        conn = self._engine.connect()
        if self._pg:
            # One snapshot for both queries of a poll (see follow.py).
            return conn.execution_options(isolation_level="REPEATABLE READ")
        return conn.execution_options(**READ)

    def _read(self, run: Any) -> Any:
        self._check_open()
        with translate_errors(self.url, _SEAM), self._engine.connect() as conn:
            conn.execution_options(**READ)
            return run(conn)

    def after_fork_in_child(self) -> None:
        """Called by the fork hook in a child process; not for direct use."""
        # Connections and the thread belong to the parent: new pool, new state.
        self._engine.dispose(close=False)
        self._writer.reset_after_fork()


def _refused(exc: BaseException) -> bool:
    """True when the database refused the rows themselves, not the connection."""
    return isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError)


#: Rows in one multi-row INSERT at most (fewer when SQLite allows fewer parameters).
_SQLITE_CHUNK = 256
#: A batch of at most this many rows is one INSERT of exactly its rows, committed on its own.
_ONE_STATEMENT = 64


class _SqliteBatches:
    """The writer thread's ``write`` for SQLite: each batch one statement on its own
    connection, when it fits in one.

    ``executemany`` steps one statement per event, and the driver lets go of the GIL
    around every step and takes it back after: a batch of N events handed the GIL to
    the server's event loop and back N times, each time waiting for the loop to let go
    of it, which put a request in flight behind it. A batch is instead split into
    power-of-two chunks (165 rows: 128 + 32 + 4 + 1), each one ``INSERT ... VALUES
    (...), (...)`` with its rows' values in one flat tuple (at most nine statement
    texts, each prepared once). The values go to the driver as they are: the payload is
    JSON text already.

    A batch of at most :data:`_ONE_STATEMENT` rows (a group commit's, ``events.durability:
    acknowledged``: a few to a few dozen answers) is one statement of exactly its rows
    outside ``BEGIN``, which SQLite commits on its own, atomically: one step, the fsync
    inside it, one hand-back of the GIL (a text per size up to that bound, each prepared
    once: the driver caches 128). A larger batch is ``BEGIN IMMEDIATE``, its power-of-two
    chunks, ``COMMIT``: a statement for every size up to 256 rows would be prepared anew
    at every flush of a busy server, each a few hundred microseconds of CPU.
    The connection is the thread's own, opened on the first write (again after a fork,
    or after the database failed it), not one checked out of the engine's pool per
    batch through SQLAlchemy's execution layer: that, with a transaction of three
    statements, made a small commit cost about twice the CPU and held up a group
    commit's answers for twice as long under load (docs/serving.md, durability).
    Errors are the engine's (:class:`sqlalchemy.exc.IntegrityError` for a refused row,
    :class:`sqlalchemy.exc.OperationalError` for a failing database), so the writer
    tells them apart as it does for PostgreSQL.
    """

    def __init__(self, engine: Engine, insert: sa.Insert) -> None:
        compiled = insert.compile(dialect=engine.dialect, column_keys=list(COLUMNS))
        raw, columns = str(compiled), tuple(compiled.positiontup or ())
        head, _, rest = raw.partition(" VALUES ")
        values, conflict, clause = rest.partition(" ON CONFLICT")
        if not (
            values.startswith("(") and values.endswith(")") and values.count("?") == len(columns)
        ):
            raise RuntimeError(f"unexpected rendering of the event log's INSERT: {raw}")
        self._head, self._values, self._tail = head, values, f"{conflict}{clause}"
        self._columns = columns
        self._texts: dict[int, str] = {}
        self._location = str(engine.url.database)
        self._dialect = engine.dialect
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._chunk = 0  # rows an INSERT at most, read off the first connection
        # Held while a batch is written: close() never closes the connection under a
        # running statement (closing waits for it, and it may be waiting up to the busy
        # timeout for a lock): the writer closes it once that statement ends.
        self._writing = threading.Lock()
        self._closed = False

    def __call__(self, rows: list[Row]) -> None:
        if not rows:
            return
        with self._writing:
            try:
                self._write(rows)
            finally:
                if self._closed:
                    self._close_now()

    def _write(self, rows: list[Row]) -> None:
        conn = self.connection()
        total, chunk, columns = len(rows), self._chunk, self._columns
        alone = total <= min(chunk, _ONE_STATEMENT)  # one statement, committed on its own
        statement = ""
        try:
            if not alone:
                conn.execute("BEGIN IMMEDIATE")
            start = 0
            while start < total:
                n = total if alone else min(chunk, 1 << ((total - start).bit_length() - 1))
                statement = self._text(n)
                part = rows[start : start + n]
                conn.execute(statement, tuple([r[c] for r in part for c in columns]))
                start += n
            if not alone:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._failed(conn, exc)
            raise sa.exc.DBAPIError.instance(
                f"{statement[:200]} ({total} events)" if statement else "BEGIN IMMEDIATE",
                None,
                exc,
                sqlite3.Error,
                hide_parameters=True,
                dialect=self._dialect,
            ) from exc

    def connection(self) -> sqlite3.Connection:
        """This process's connection (opened on first use; a fork's child opens its own)."""
        conn, pid = self._conn, os.getpid()
        if conn is None or self._pid != pid:
            # A connection inherited over fork is the parent's: left alone, not closed.
            conn = sqlite_connection(self._location)
            if not self._chunk:
                limit = int(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
                self._chunk = _chunk_rows(limit, len(self._columns))
            self._conn, self._pid = conn, pid
        return conn

    def close(self) -> None:
        """Close the connection now, or when the batch being written ends."""
        self._closed = True
        if self._writing.acquire(blocking=False):
            try:
                self._close_now()
            finally:
                self._writing.release()

    def _close_now(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    def _text(self, n: int) -> str:
        found = self._texts.get(n)
        if found is None:
            found = self._texts[n] = (
                f"{self._head} VALUES {', '.join([self._values] * n)}{self._tail}"
            )
        return found

    def _failed(self, conn: sqlite3.Connection, exc: sqlite3.Error) -> None:
        with suppress(sqlite3.Error):  # a closed connection has no transaction to end
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        if not isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
            # The database failed, not the rows (I/O error, locked past the busy
            # timeout, the file replaced): the next attempt opens a fresh connection.
            self._close_now()


def _chunk_rows(limit: int, columns: int) -> int:
    """Rows in one INSERT at most: a power of two, within ``limit`` parameters (SQLite's
    ``SQLITE_LIMIT_VARIABLE_NUMBER``: 32,766 since 3.32, 999 before) and
    :data:`_SQLITE_CHUNK`."""
    return 1 << (max(1, min(_SQLITE_CHUNK, limit // columns)).bit_length() - 1)
