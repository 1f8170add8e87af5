"""SQLAlchemy engines for the SQL-backed seams (metadata store, event log).

One place decides how Conveyor talks to SQLite and PostgreSQL:

- SQLite runs in WAL mode with foreign keys on, ``synchronous=FULL`` (the
  WAL is fsynced at every commit, so a committed run, report or durable
  event survives power loss, not only a process crash; the event log's
  batching keeps that to one fsync per batch) and a busy timeout, so
  several processes can write without "database is locked".
- PostgreSQL goes through psycopg 3, with pre-ping so a restarted server
  costs a reconnect, not an error.
- Connection failures become :class:`BackendUnavailableError` naming host
  and port.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from conveyor.backends import BackendURL, unavailable
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import sqlite3

__all__ = ["READ", "connect_check", "create_engine", "sqlite_connection", "translate_errors"]

#: Execution options for a read-only connection: ``engine.connect().execution_options(**READ)``.
READ: dict[str, Any] = {"sqlite_begin": "DEFERRED"}

SQLITE_BUSY_TIMEOUT_MS = 30_000


def create_engine(url: BackendURL, seam: str, **options: Any) -> Engine:
    """An engine for a ``sqlite://`` or ``postgresql://`` URL (no connection is made yet)."""
    if url.scheme == "sqlite":
        return _sqlite_engine(url, **options)
    if url.scheme == "postgresql":
        if url.driver not in (None, "psycopg"):
            raise InvalidInputError(
                f"{url}: Conveyor talks to PostgreSQL through psycopg 3; "
                f"drop the '+{url.driver}' driver suffix",
                field=seam,
            )
        sa_url = sa.engine.make_url(url.with_(driver="psycopg").render(hide_password=False))
        if "connect_timeout" not in url.query:
            # libpq waits forever on a black-holed host; a user deserves an answer.
            options.setdefault("connect_args", {}).setdefault("connect_timeout", 10)
        options.setdefault("pool_pre_ping", True)
        options.setdefault("pool_size", 5)
        options.setdefault("max_overflow", 10)
        return sa.create_engine(sa_url, **options)
    raise InvalidInputError(f"{url}: not a SQL URL (sqlite:// or postgresql://)", field=seam)


def _sqlite_engine(url: BackendURL, **options: Any) -> Engine:
    location = url.location
    memory = location in ("", ":memory:")
    if not memory:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        options.setdefault("pool_size", 8)
    else:
        # One shared connection, or every checkout would see a new empty database.
        options.setdefault("poolclass", sa.pool.StaticPool)
    engine = sa.create_engine(
        f"sqlite:///{location if not memory else ':memory:'}",
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        **options,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        _configure_sqlite(dbapi_conn, memory=memory)

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Readers pass execution_options(sqlite_begin="DEFERRED") so they never
        # queue behind a writer (WAL lets them read while it writes).
        conn.exec_driver_sql(
            f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'IMMEDIATE')}"
        )

    return engine


def sqlite_connection(location: str) -> sqlite3.Connection:
    """A driver-level connection to the SQLite file at ``location``, set up as the
    engine's are (WAL, ``synchronous=FULL``, foreign keys, the busy timeout, and no
    implicit transactions: a statement outside ``BEGIN`` commits on its own).

    For a thread that owns its connection and pays per statement (the event log's
    writer): no pool checkout, no SQLAlchemy execution layer around each statement.
    """
    import sqlite3

    conn = sqlite3.connect(location, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    try:
        _configure_sqlite(conn, memory=False)
    except BaseException:
        conn.close()
        raise
    return conn


def _configure_sqlite(dbapi_conn: Any, *, memory: bool) -> None:
    # The driver's own transaction handling issues BEGIN lazily (deferred),
    # which lets two writers both read and then deadlock on upgrade; BEGIN
    # IMMEDIATE takes the write lock up front and waits for it instead.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    if not memory:
        _wal(cur)
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.close()


def _wal(cur: Any) -> None:
    """Put the database in WAL mode, once. Switching takes an exclusive lock for which
    SQLite does not always wait (processes opening a new file at once got "database is
    locked" at once): the mode is read first (already WAL: nothing to take), and the switch
    is retried within the busy timeout."""
    import sqlite3
    import time

    if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


@contextmanager
def translate_errors(url: BackendURL, seam: str) -> Iterator[None]:
    """Turn a driver's connection failure into :class:`BackendUnavailableError`."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        if _is_connection_failure(exc):
            raise unavailable(url, seam, _reason(exc)) from exc
        raise
    except sa.exc.InterfaceError as exc:
        raise unavailable(url, seam, _reason(exc)) from exc


def connect_check(engine: Engine, url: BackendURL, seam: str) -> None:
    """Open one connection and run ``SELECT 1``; raise BackendUnavailableError if it fails."""
    with translate_errors(url, seam), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def _is_connection_failure(exc: sa.exc.OperationalError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower()
    return any(
        marker in text
        for marker in (
            "connection refused",
            "could not connect",
            "connection failed",
            "timeout expired",
            "does not exist",  # database "x" does not exist
            "unable to open database",
            "server closed the connection",
            "name or service not known",
            "authentication failed",
            "no such host",
            "database is locked",  # still busy after the 30 s busy timeout
        )
    )


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
