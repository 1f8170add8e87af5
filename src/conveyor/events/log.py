"""``EventLog``: the event log's interface, and the write path every backend shares.

One writer, many readers (DESIGN.md, principle 2)::

    with EventLog.from_url("sqlite:///.conveyor/events.db") as log:   # the backend by scheme
        log.record(ALIAS_MOVED, subject="fraud", payload={...})        # a catalogued kind
        log.emit("my.step_done", subject="nightly", payload={"rows": 3})  # a free kind
        for event in log.iter(kind="gate.*", since=yesterday):
            ...

Writes go to memory and a background thread commits them in batches (see
``writer.py`` for batching, durability, failures, back-pressure and the
telemetry path that never waits). That part is the same for every backend
and lives here; reading is each backend's: :class:`~conveyor.events.sql.SqlEventLog`
(SQLite, PostgreSQL) and the stream logs of :mod:`conveyor.events.streams`
(NATS JetStream, Redis Streams), all held to one contract
(:mod:`conveyor.testing.events`).

Lifecycle: a log is closed with ``close()`` or ``with``. A log still open at
interpreter exit is closed then (flushing its buffer), through a weakref
finalizer; a forked child (server workers, ``multiprocessing``) that inherits
a log gets fresh connections, an empty buffer and its own writer thread on its
first write (:mod:`conveyor.events.lifecycle`).
"""

from __future__ import annotations

import logging
import os
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

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
from conveyor.events.schema import Event, dump_payload
from conveyor.events.writer import BatchWriter, Row
from conveyor.store.paging import Page

__all__ = ["EventLog", "check_options", "open_writer", "row_of", "write_error"]

log = logging.getLogger("conveyor.events")

_ITER_PAGE = 1_000


class EventLog(Closeable, ABC):
    """An append-only event log. Open one with :meth:`from_url` or ``EVENTS.open(url)``.

    A backend gives the constructor its writer and how to release its
    connections, and implements the reads (:meth:`query`, :meth:`count`,
    :meth:`follow`, :meth:`erase`, :meth:`health`, :meth:`ping`).
    """

    def __init__(
        self,
        url: BackendURL,
        writer: BatchWriter,
        release: Callable[[], None],
        *,
        in_own_thread: Callable[[], bool] | None = None,
    ) -> None:
        self.url = url
        self._writer = writer
        self._release = release
        # Closes at interpreter exit (or if the log is dropped unclosed), holding
        # no reference to self so the log can still be garbage collected.
        self._finalizer = weakref.finalize(
            self, lifecycle.close_quietly, writer, release, str(url), in_own_thread
        )
        lifecycle.track(self)

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
        """Open the log at ``url``: the backend its scheme names (``sqlite://``,
        ``postgresql://``, ``nats://``, ``redis://``; ``EVENTS.open`` does the same).

        ``batch_size`` events at most per write; a batch is written every
        ``flush_interval`` seconds or as soon as it is full. At most
        ``max_buffer`` events wait in memory: beyond that, writers block until
        the background thread has made room (back-pressure), except telemetry
        (:meth:`record` of a ``telemetry`` kind), which goes to spill segments
        in ``spill_dir`` meanwhile, or is shed and counted without one.
        ``migrate`` brings the backend's schema or stream to what this version
        needs. Raises :class:`BackendUnavailableError` if the service cannot be
        reached.
        """
        from conveyor.backends import EVENTS

        opened: EventLog = EVENTS.open(
            url,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_buffer=max_buffer,
            migrate=migrate,
            spill_dir=spill_dir,
        )
        return opened

    def __repr__(self) -> str:
        state = "closed" if self._writer.closed else "open"
        return f"{type(self).__name__}({str(self.url)!r}, {state})"

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
        row = row_of(event)
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
        return event if self._writer.offer(row_of(event)) else None

    def stats(self) -> dict[str, int]:
        """What the write path did so far: ``unwritten`` (in memory), ``shed`` (telemetry
        dropped: no room and no spill), ``spilled`` and ``replayed`` (through spill segments),
        ``commits`` (transactions: rows per commit is the batch size the writer reached)."""
        spill = self._writer.spill
        return {
            "unwritten": self._writer.unwritten,
            "commits": self._writer.commits,
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
        rows = [row_of(event) for event in batch]
        if len(rows) == 1:
            self._writer.put(rows[0])
        elif rows:
            self._writer.put_many(rows)
        if durable and rows:
            self._writer.wait(self._writer.barrier(row["id"] for row in rows), None)

    def on_committed(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(None)`` from the writer thread once every event written before
        this call is committed, or ``callback(error)`` when the attempt failed (the events
        are kept and retried). Never blocks: what a server's group commit
        (:class:`conveyor.events.acknowledge.GroupCommit`) is built on."""
        self._check_open()
        self._writer.barrier(None, callback)

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
            self._release()

    @property
    def closed(self) -> bool:
        return self._writer.closed

    @property
    def rejected(self) -> list[tuple[dict[str, Any], str]]:
        """Events the database refused (newest last, up to 10,000), with the reason.

        Each is the row as it was to be inserted (``payload`` as JSON text).
        """
        return [(dict(row), reason) for row, reason in list(self._writer.rejected)]

    def _check_open(self) -> None:
        if self._writer.closed:
            raise ClosedError(f"the event log {self.url} is closed")

    # -- what each backend implements ---------------------------------------------------

    @abstractmethod
    def ping(self) -> None:
        """Run ``SELECT 1``; raise BackendUnavailableError if the database does not answer."""

    @abstractmethod
    def health(self) -> dict[str, Any]:
        """What ``conveyor doctor`` shows: backend, URL, schema revision and head, backlog.

        ``migrated`` is False while the database is behind this version of
        Conveyor (opening the log with ``migrate=True`` brings it up);
        ``unwritten`` counts events in memory not yet committed.
        """

    @abstractmethod
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

    @abstractmethod
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

    @abstractmethod
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

    @abstractmethod
    def erase(self, field: str, value: Any) -> int:
        """Delete every event holding ``field == value`` in its payload (any depth) or
        ``field:value`` as its subject; return how many. For data-subject deletion only:
        the log is otherwise append-only. Flushes first so nothing pending escapes.
        """

    @abstractmethod
    def after_fork_in_child(self) -> None:
        """Called by the fork hook in a child process: new connections, an empty writer."""

    # -- reading, on top of query -----------------------------------------------------------

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


def open_writer(
    url: BackendURL,
    write: Callable[[list[Row]], None],
    *,
    refused: Callable[[BaseException], bool],
    translate: Callable[[BaseException], BaseException] = lambda exc: exc,
    batch_size: int,
    flush_interval: float,
    max_buffer: int,
    spill_dir: str | os.PathLike[str] | None,
) -> BatchWriter:
    """A backend's batch writer: the options checked the same way for every backend.

    ``write(rows)`` stores rows in one go (raising on failure); ``refused(exc)``
    says whether a failure was the rows' fault (the batch is split to isolate
    them); ``translate`` turns a driver's error into a Conveyor one.
    """
    check_options(batch_size, flush_interval, max_buffer)
    spill = None
    if spill_dir is not None:
        from conveyor.events.spill import SpillSegments

        spill = SpillSegments(spill_dir)

    def describe(exc: BaseException, unwritten: int) -> ConveyorError:
        return write_error(url, translate(exc), unwritten)

    return BatchWriter(
        lambda rows: write(list(rows)),
        refused=refused,
        describe=describe,
        batch_size=batch_size,
        flush_interval=flush_interval,
        max_buffer=max_buffer,
        spill=spill,
    )


def row_of(event: Event) -> Row:
    """An event as the writer stores it (its payload as JSON text)."""
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


def check_options(batch_size: int, flush_interval: float, max_buffer: int) -> None:
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


def write_error(url: BackendURL, exc: BaseException, unwritten: int) -> ConveyorError:
    reason = str(exc) if isinstance(exc, ConveyorError) else _first_line(exc)
    cls = BackendUnavailableError if isinstance(exc, BackendUnavailableError) else BackendError
    error = cls(
        f"could not write to the event log at {url}: {reason}. {unwritten} events are kept "
        "in memory and retried in the background",
        seam="events",
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
