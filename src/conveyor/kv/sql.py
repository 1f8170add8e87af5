"""Key-value store in one SQLite file: shared by the processes of one machine.

Table ``kv(key TEXT PRIMARY KEY, value BLOB, expires_at REAL, score1 REAL,
score2 REAL)``, with ``expires_at`` on the wall clock (``time.time()``) because
several processes read it, and the ordering score of
:meth:`~SqliteKV.set_many_if_newer` (``NULL`` for plain writes; a file made
before the columns existed gets them when opened). Expired rows are treated
as absent; they are deleted when read and in a sweep every
:data:`SWEEP_EVERY` writes.

The database runs in WAL mode with a busy timeout, so readers never wait
for a writer and writers from several processes queue instead of failing
with "database is locked". Read-modify-write operations (``incr``,
``delete``) run inside ``BEGIN IMMEDIATE``, which takes the write lock
before reading: two processes incrementing the same counter never both
read the old value.

The standard library driver is used directly rather than SQLAlchemy: a
cache lookup is one indexed query, and the pool and ORM layers would cost
more than the query itself.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from conveyor.backends import BackendURL, seconds_option
from conveyor.errors import BackendUnavailableError, InvalidInputError
from conveyor.kv.base import BaseKV
from conveyor.kv.options import (
    Versioned,
    check_amount,
    check_key,
    check_query,
    check_ttl,
    check_value,
    check_versioned,
    counter_value,
    prefix_of,
)

__all__ = ["SWEEP_EVERY", "SqliteKV"]

SWEEP_EVERY = 1024
_BUSY_TIMEOUT_S = 30.0
# Stay well under SQLite's limit on bound parameters per statement (999 on old builds).
_BATCH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL,
    score1 REAL,
    score2 REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;
"""
_UPSERT = (
    "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, "
    "score1 = NULL, score2 = NULL"
)
# The compare-and-set of set_many_if_newer: one statement per key, so the check and the
# write cannot be split by another writer. An absent, expired or unscored row is replaced.
_UPSERT_IF_NEWER = (
    "INSERT INTO kv (key, value, expires_at, score1, score2) VALUES (?1, ?2, ?3, ?4, ?5) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, "
    "score1 = excluded.score1, score2 = excluded.score2 "
    "WHERE kv.score1 IS NULL OR kv.score2 IS NULL "
    "OR (kv.expires_at IS NOT NULL AND kv.expires_at <= ?6) "
    "OR excluded.score1 > kv.score1 "
    "OR (excluded.score1 = kv.score1 AND excluded.score2 >= kv.score2)"
)


class SqliteKV(BaseKV):
    """Key-value store on ``sqlite:///path.db`` (``sqlite:///:memory:`` for a private one)."""

    def __init__(self, url: BackendURL, prefix: str, conn: sqlite3.Connection) -> None:
        super().__init__(url, prefix)
        self._conn = conn
        # One connection, one lock: sqlite3 connections must not be used by two
        # threads at once, and each statement here takes microseconds.
        self._lock = threading.Lock()
        self._writes = 0

    @classmethod
    def from_url(cls, url: str | BackendURL, **options: Any) -> Self:
        parsed = BackendURL.parse(url)
        check_query(parsed, {"timeout"})
        if options:
            raise InvalidInputError(
                f"SqliteKV takes no options, got {', '.join(sorted(options))}", field="options"
            )
        timeout = seconds_option(parsed, "timeout", _BUSY_TIMEOUT_S)
        location = parsed.location
        memory = location in ("", ":memory:")
        try:
            if not memory:
                Path(location).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                ":memory:" if memory else location,
                timeout=timeout,
                check_same_thread=False,
                isolation_level=None,  # autocommit; transactions are explicit below
            )
        except (OSError, sqlite3.Error) as exc:
            raise _unavailable(parsed, location, exc) from exc
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                if not memory:
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                _add_score_columns(conn)
                break
            except sqlite3.OperationalError as exc:
                # Several processes opening a new file at once: switching it to WAL
                # can answer "locked" without waiting on the busy handler. Retry.
                if "locked" in str(exc) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                conn.close()
                raise _unavailable(parsed, location, exc) from exc
            except sqlite3.Error as exc:
                conn.close()
                raise _unavailable(parsed, location, exc) from exc
        return cls(parsed, prefix_of(parsed), conn)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._conn.close()
            super().close()

    # -- reads ----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        full = [self._prefix + check_key(k) for k in keys]
        found: dict[str, bytes] = {}
        expired: list[str] = []
        now = time.time()
        with self._locked() as conn:
            for start in range(0, len(full), _BATCH):
                batch = full[start : start + _BATCH]
                marks = ",".join("?" * len(batch))
                rows = conn.execute(
                    f"SELECT key, value, expires_at FROM kv WHERE key IN ({marks})", batch
                )
                for k, value, expires in rows:
                    if expires is not None and expires <= now:
                        expired.append(k)
                    else:
                        found[k] = bytes(value)
            if expired:
                # The guard on expires_at keeps a row another process just rewrote.
                conn.executemany(
                    "DELETE FROM kv WHERE key = ? AND expires_at <= ?",
                    [(k, now) for k in expired],
                )
        return [found.get(k) for k in full]

    # -- writes ---------------------------------------------------------------

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self.set_many({key: value}, ttl=ttl)

    def set_many(self, mapping: Mapping[str, bytes], *, ttl: float | None = None) -> None:
        seconds = check_ttl(ttl)
        rows = [(self._prefix + check_key(k), check_value(v)) for k, v in mapping.items()]
        if not rows:
            self._check_open()
            return
        with self._transaction() as conn:
            expires = None if seconds is None else time.time() + seconds
            conn.executemany(_UPSERT, [(k, v, expires) for k, v in rows])
            self._count_writes(conn, len(rows))

    def set_many_if_newer(self, mapping: Mapping[str, Versioned]) -> int:
        items = [(self._prefix + check_key(k), *check_versioned(k, v)) for k, v in mapping.items()]
        if not items:
            self._check_open()
            return 0
        with self._transaction() as conn:
            now = time.time()
            cursor = conn.executemany(
                _UPSERT_IF_NEWER,
                [
                    (k, v, None if ttl is None else now + ttl, score[0], score[1], now)
                    for k, v, score, ttl in items
                ],
            )
            written = cursor.rowcount
            self._count_writes(conn, len(items))
        return written

    def delete(self, key: str) -> bool:
        full = self._prefix + check_key(key)
        with self._transaction() as conn:
            row = conn.execute("SELECT expires_at FROM kv WHERE key = ?", (full,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM kv WHERE key = ?", (full,))
        return row[0] is None or row[0] > time.time()

    def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        full = self._prefix + check_key(key)
        step = check_amount(amount)
        seconds = check_ttl(ttl)
        with self._transaction() as conn:
            now = time.time()
            row = conn.execute("SELECT value, expires_at FROM kv WHERE key = ?", (full,)).fetchone()
            if row is None or (row[1] is not None and row[1] <= now):
                current, expires = 0, (None if seconds is None else now + seconds)
            else:
                current, expires = counter_value(key, bytes(row[0])), row[1]
            value = current + step
            conn.execute(_UPSERT, (full, str(value).encode("ascii"), expires))
            self._count_writes(conn, 1)
        return value

    def clear(self) -> int:
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM kv WHERE substr(key, 1, ?) = ?", (len(self._prefix), self._prefix)
            )
            return cursor.rowcount

    def ping(self) -> None:
        with self._locked() as conn:
            conn.execute("SELECT 1").fetchone()

    # -- internals ------------------------------------------------------------

    def _count_writes(self, conn: sqlite3.Connection, n: int) -> None:
        before = self._writes
        self._writes += n
        if before // SWEEP_EVERY != self._writes // SWEEP_EVERY:
            conn.execute("DELETE FROM kv WHERE expires_at <= ?", (time.time(),))

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open()
            try:
                yield self._conn
            except sqlite3.OperationalError as exc:
                raise _unavailable(self._url, self._url.location, exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._locked() as conn:
            # IMMEDIATE: take the write lock before reading, so a read-modify-write
            # cannot interleave with another process's.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


def _add_score_columns(conn: sqlite3.Connection) -> None:
    """Give a file made before set_many_if_newer its two score columns (once, idempotent)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(kv)")}
    for name in ("score1", "score2"):
        if name not in columns:
            try:
                conn.execute(f"ALTER TABLE kv ADD COLUMN {name} REAL")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another process added it first
                    raise


def _unavailable(url: BackendURL, location: str, exc: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"the key-value database {location or ':memory:'} ({url}) cannot be used: {exc}. "
        "Check that the folder exists and is writable, and that no other program holds "
        "the file locked.",
        seam="key-value",
        path=location,
        url=str(url),
    )
