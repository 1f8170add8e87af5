"""``EventLog``: the append-only event log on SQLite or PostgreSQL.

One writer, many readers (DESIGN.md, principle 2)::

    with EVENTS.open("sqlite:///.conveyor/events.db") as log:
        log.emit("prediction", subject="fraud", subject_version="3",
                 payload={"latency_ms": 1.9}, request_id=rid)      # microseconds
        log.emit("gate.decided", subject="fraud", payload={"passed": True},
                 durable=True)                                      # waits for the commit
        for event in log.iter(kind="gate.*", since=yesterday):
            ...

Writes go to memory and a background thread commits them in batches (see
``writer.py`` for batching, durability, failures and back-pressure). Reads
go straight to the database; on SQLite they use deferred transactions so
they never queue behind the writer.

Lifecycle: the log is closed with ``close()`` or ``with``. A log still open
at interpreter exit is closed then (flushing its buffer), through a weakref
finalizer registered by :meth:`EventLog.from_url`. A forked child (server
workers, ``multiprocessing``) that inherits a log gets a fresh connection
pool, an empty buffer and its own writer thread on its first write; the
parent's buffered events stay the parent's to write.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from conveyor.backends import BackendURL, Closeable
from conveyor.capability import EventKind
from conveyor.errors import (
    BackendError,
    BackendUnavailableError,
    ClosedError,
    ConveyorError,
    InvalidInputError,
)
from conveyor.events import lifecycle
from conveyor.events.filters import Filters, decode_seq_cursor, encode_seq_cursor
from conveyor.events.follow import Follower
from conveyor.events.schema import Event, dump_payload
from conveyor.events.table import COLUMNS, insert_statement
from conveyor.events.table import events as TABLE
from conveyor.events.writer import BatchWriter, Row
from conveyor.store.engine import READ, create_engine, translate_errors
from conveyor.store.migrate import current_revision, head_revision, upgrade
from conveyor.store.paging import Page, check_limit

__all__ = ["MIGRATIONS", "VERSION_TABLE", "EventLog"]

log = logging.getLogger("conveyor.events")

MIGRATIONS = "conveyor.events:migrations"
VERSION_TABLE = "conveyor_events_version"
_SEAM = "events"
_ITER_PAGE = 1_000
_SELECT = [TABLE.c.seq, *(TABLE.c[name] for name in COLUMNS)]


class EventLog(Closeable):
    """An append-only event log. Open it with :meth:`from_url` or ``EVENTS.open(url)``."""

    def __init__(self, url: BackendURL, engine: Engine, writer: BatchWriter) -> None:
        self.url = url
        self._engine = engine
        self._writer = writer
        self._pg = engine.dialect.name == "postgresql"
        # Closes at interpreter exit (or if the log is dropped unclosed), holding
        # no reference to self so the log can still be garbage collected.
        self._finalizer = weakref.finalize(self, lifecycle.close_quietly, writer, engine, str(url))

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
    ) -> EventLog:
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
        _check_options(batch_size, flush_interval, max_buffer)
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

        def write(rows: Sequence[Row]) -> None:
            with translate_errors(url, _SEAM), engine.begin() as conn:
                conn.execute(insert, list(rows))

        def describe(exc: BaseException, unwritten: int) -> ConveyorError:
            return _write_error(url, exc, unwritten)

        spill = None
        if spill_dir is not None:
            from conveyor.events.spill import SpillSegments

            spill = SpillSegments(spill_dir)
        writer = BatchWriter(
            write,
            refused=_refused,
            describe=describe,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_buffer=max_buffer,
            spill=spill,
        )
        event_log = cls(url, engine, writer)
        lifecycle.track(event_log)
        return event_log

    def __repr__(self) -> str:
        state = "closed" if self._writer.closed else "open"
        return f"EventLog({str(self.url)!r}, {state})"

    # -- writing ----------------------------------------------------------------

    def emit(
        self,
        kind: str,
        *,
        subject: str | None = None,
        payload: Mapping[str, Any] | None = None,
        subject_version: str | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        actor: str | None = None,
        durable: bool = False,
    ) -> Event:
        """Record that something happened; returns the stamped event.

        Validation and JSON encoding happen here (:class:`InvalidInputError`).
        Non-durable: returns once the event is in memory. ``durable=True``:
        returns once it is committed, or raises the commit's error (the event
        is kept and retried; re-append the returned event to wait again,
        appends are idempotent by id).
        """
        if self._writer.closed:
            raise ClosedError(f"the event log {self.url} is closed; open a new one to write")
        event = Event(
            kind,
            subject,
            subject_version,
            {} if payload is None else payload,
            request_id,
            trace_id,
            actor,
        )
        row = _row(event)
        self._writer.put(row)
        if durable:
            self._writer.wait(self._writer.barrier((event.id,)), None)
        return event

    def record(
        self,
        kind: EventKind | str,
        *,
        subject: str | None = None,
        payload: Mapping[str, Any] | None = None,
        subject_version: str | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        actor: str | None = None,
    ) -> Event | None:
        """Write an event of a catalogued kind, as durably as the kind says.

        The payload is checked against the kind's fields
        (:func:`conveyor.events.catalogue.check_payload`). ``audit`` returns
        once committed; ``control`` once queued (waiting for room when the
        buffer is full); ``telemetry`` at once, whatever the sink's state, and
        returns None when the event had to be shed (counted in :meth:`stats`).
        """
        from conveyor.events.catalogue import check_payload
        from conveyor.events.catalogue import kind as catalogued

        declared = catalogued(kind) if isinstance(kind, str) else kind
        body = {} if payload is None else payload
        check_payload(declared, body)
        if declared.durability != "telemetry":
            return self.emit(
                declared.name,
                subject=subject,
                payload=body,
                subject_version=subject_version,
                request_id=request_id,
                trace_id=trace_id,
                actor=actor,
                durable=declared.durability == "audit",
            )
        if self._writer.closed:
            raise ClosedError(f"the event log {self.url} is closed; open a new one to write")
        event = Event(declared.name, subject, subject_version, body, request_id, trace_id, actor)
        return event if self._writer.offer(_row(event)) else None

    def stats(self) -> dict[str, int]:
        """What the write path did so far: ``unwritten`` (in memory), ``shed`` (telemetry
        dropped: no room and no spill), ``spilled`` and ``replayed`` (through spill segments)."""
        spill = self._writer.spill
        return {
            "unwritten": self._writer.unwritten,
            "shed": self._writer.shed,
            "spilled": self._writer.spilled,
            "replayed": spill.replayed if spill is not None else 0,
        }

    def append(self, event: Event, *, durable: bool = False) -> None:
        """Write an event built elsewhere. Appending an id already stored is a no-op."""
        self._put([event], durable)

    def append_many(self, events: Iterable[Event], *, durable: bool = False) -> None:
        """Write several events in order; each is validated before any is queued."""
        self._put(list(events), durable)

    def _put(self, batch: list[Event], durable: bool) -> None:
        if self._writer.closed:
            raise ClosedError(f"the event log {self.url} is closed; open a new one to write")
        rows = [_row(event) for event in batch]
        if len(rows) == 1:
            self._writer.put(rows[0])
        elif rows:
            self._writer.put_many(rows)
        if durable and rows:
            self._writer.wait(self._writer.barrier(row["id"] for row in rows), None)

    def load_spilled(self, timeout: float | None = None) -> None:
        """Wait until spilled telemetry (this process's, and that of dead processes sharing
        the spill folder) is loaded into the log; TimeoutError if the sink stays behind."""
        self._check_open()
        self._writer.load_spilled(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every event written before the call is committed.

        Raises the error of a failed attempt (the events are kept and retried),
        :class:`InvalidInputError` if the database refused events since the
        last flush (they are in :attr:`rejected`), or ``TimeoutError``.
        """
        self._check_open()
        self._writer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the writer thread and release connections. Idempotent.

        If the last events cannot be committed, raises :class:`ClosedError`
        saying how many were not written (after logging it).
        """
        if self._finalizer.detach() is None:
            return
        lifecycle.untrack(self)
        try:
            self._writer.close(timeout)
        finally:
            self._engine.dispose()

    @property
    def closed(self) -> bool:
        return self._writer.closed

    @property
    def rejected(self) -> list[tuple[dict[str, Any], str]]:
        """Events the database refused (newest last, up to 10,000), with the reason.

        Each is the row as it was to be inserted (``payload`` as JSON text).
        """
        return [(dict(row), reason) for row, reason in list(self._writer.rejected)]

    # -- health -----------------------------------------------------------------

    def ping(self) -> None:
        """Run ``SELECT 1``; raise BackendUnavailableError if the database does not answer."""
        self._read(lambda conn: conn.execute(sa.text("SELECT 1")))

    def health(self) -> dict[str, Any]:
        """What ``conveyor doctor`` shows: backend, URL, schema revision and head, backlog.

        ``migrated`` is False while the database is behind this version of
        Conveyor (opening the log with ``migrate=True`` brings it up);
        ``unwritten`` counts events in memory not yet committed.
        """
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

    # -- reading ----------------------------------------------------------------

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
        """One page of events in insertion order; pass ``next_cursor`` for the next.

        ``kind`` is exact (``run.started``) or a prefix pattern (``run.*``);
        ``since`` is inclusive and ``until`` exclusive (aware datetimes).
        """
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

    def iter(
        self,
        *,
        kind: str | Sequence[str] | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        request_id: str | None = None,
        actor: str | None = None,
        descending: bool = False,
    ) -> Iterator[Event]:
        """Every matching event, a page at a time (no transaction held between pages)."""
        cursor: str | None = None
        while True:
            page = self.query(
                kind=kind,
                subject=subject,
                since=since,
                until=until,
                request_id=request_id,
                actor=actor,
                limit=_ITER_PAGE,
                cursor=cursor,
                descending=descending,
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def latest(
        self,
        n: int = 10,
        *,
        kind: str | Sequence[str] | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        request_id: str | None = None,
        actor: str | None = None,
    ) -> list[Event]:
        """The newest ``n`` matching events, oldest first (``conveyor events tail``)."""
        page = self.query(
            kind=kind,
            subject=subject,
            since=since,
            until=until,
            request_id=request_id,
            actor=actor,
            limit=n,
            descending=True,
        )
        return list(reversed(page.items))

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
        """How many events match."""
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
        """Matching events committed after a starting point, as they are committed.

        The start is fixed when this is called: the newest event in the log,
        or ``after`` (an event already stored, typically the last of
        :meth:`latest`, so ``tail -n N -f`` misses nothing in between).
        Polls every ``poll_interval`` seconds; stops after ``idle_timeout``
        seconds without a new event (None: never). On PostgreSQL an event
        whose transaction commits after one with a higher seq is still
        yielded once, late, if it commits within ``late_window`` seconds
        (see ``follow.py``).
        """
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
        """Delete every event holding ``field == value`` in its payload (any depth) or
        ``field:value`` as its subject; return how many. For data-subject deletion only:
        the log is otherwise append-only. Flushes first so nothing pending escapes.
        """
        from conveyor.events.erase import erase_where, holds

        self.flush()
        subject = f"{field}:{value}"
        with translate_errors(self.url, _SEAM):
            return erase_where(
                self._engine,
                lambda payload, subj: subj == subject or holds(payload, field, value),
                str(value),
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

    def _check_open(self) -> None:
        if self._writer.closed:
            raise ClosedError(f"the event log {self.url} is closed")

    def after_fork_in_child(self) -> None:
        """Called by the fork hook in a child process; not for direct use."""
        # Connections and the thread belong to the parent: new pool, new state.
        self._engine.dispose(close=False)
        self._writer.reset_after_fork()


def _row(event: Event) -> Row:
    if not isinstance(event, Event):
        raise InvalidInputError(
            f"expected an Event, got {type(event).__name__}; use emit() for keyword arguments",
            field="event",
        )
    return {
        "id": event.id,
        "time_us": event.time_us,
        "kind": event.kind,
        "subject": event.subject,
        "subject_version": event.subject_version,
        "request_id": event.request_id,
        "trace_id": event.trace_id,
        "actor": event.actor,
        "payload": dump_payload(event.payload),
    }


def _check_options(batch_size: int, flush_interval: float, max_buffer: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(
            f"batch_size must be a positive integer, got {batch_size!r}", field="batch_size"
        )
    if not isinstance(flush_interval, int | float) or not flush_interval > 0:
        raise InvalidInputError(
            f"flush_interval must be a positive number of seconds, got {flush_interval!r}",
            field="flush_interval",
        )
    if not isinstance(max_buffer, int) or max_buffer < batch_size:
        raise InvalidInputError(
            f"max_buffer must be an integer of at least batch_size ({batch_size}), "
            f"got {max_buffer!r}",
            field="max_buffer",
        )


def _refused(exc: BaseException) -> bool:
    """True when the database refused the rows themselves, not the connection."""
    return isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError)


def _write_error(url: BackendURL, exc: BaseException, unwritten: int) -> ConveyorError:
    reason = str(exc) if isinstance(exc, ConveyorError) else _first_line(exc)
    cls = BackendUnavailableError if isinstance(exc, BackendUnavailableError) else BackendError
    error = cls(
        f"could not write to the event log at {url}: {reason}. {unwritten} events are kept "
        "in memory and retried in the background",
        seam=_SEAM,
        url=str(url),
        host=url.host,
        port=url.port,
        unwritten=unwritten,
    )
    error.__cause__ = exc
    return error


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__
