"""What the stream backends of the event log (NATS JetStream, Redis Streams) share.

A stream log *is* an :class:`~conveyor.events.log.EventLog`: every capability
is typed against that class, and its write path (``emit``, ``record``,
``append``, the :class:`~conveyor.events.writer.BatchWriter` with durable
writes, back-pressure, spill segments and refused rows) does not depend on
SQL. :class:`StreamEventLog` keeps that path as it is and replaces every
method that touches the database; a backend supplies a handful of primitives
(read entries in order, wait for new ones, delete some, a few facts).

Order and cursors
    A stream stores each event at an integer *position* that only grows: the
    stream sequence on NATS, the entry id ``0-<n>`` on Redis. It is the
    log's order, like ``seq`` in SQL, and page cursors are the SQL log's
    (:func:`~conveyor.events.filters.encode_seq_cursor`), so code that keeps a
    cursor (pipeline triggers) works on every backend. A position is given
    when the event is stored, so a follower never meets the "late commit"
    that PostgreSQL's follower guards against; ``late_window`` is accepted
    and has nothing to do.

Filters
    The backend may narrow the read by kind (NATS does, with subjects); every
    filter is then applied here, in the client, with the same meaning as the
    SQL clauses (:class:`Matcher`). A count the server can answer (every
    event; on NATS also by kind) is asked of it; any other count scans.
    ``erase`` scans too: streams have no index on payload fields.

Wire format
    One JSON object per event with the fields of ``table.COLUMNS``, the
    payload as a JSON object (not text), so another program reading the
    stream needs nothing but a JSON parser.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Collection, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, closing
from datetime import datetime
from time import monotonic
from typing import Any, Protocol

import orjson

from conveyor.backends import BackendURL, check_options
from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.events.filters import Filters, decode_seq_cursor, encode_seq_cursor, to_us
from conveyor.events.log import EventLog
from conveyor.events.schema import Event
from conveyor.events.writer import BatchWriter, Row
from conveyor.store.paging import Page, check_limit

__all__ = [
    "CHUNK",
    "Connection",
    "Entries",
    "Feed",
    "Matcher",
    "StreamEventLog",
    "check_query",
    "decode_event",
    "encode_event",
    "kind_of",
]

log = logging.getLogger("conveyor.events")

_SEAM = "events"
#: Entries read per round trip once the first read (sized for the page asked) is done.
CHUNK = 1_000
#: The longest a follower's wait for new entries lasts before it checks close and idleness.
MAX_WAIT = 1.0

Entries = Generator[tuple[int, Event], None, None]


# -- the wire format -------------------------------------------------------------------


def encode_event(row: Row) -> bytes:
    """A writer row (payload as JSON text) as the JSON object stored in the stream."""
    return orjson.dumps({**row, "payload": orjson.Fragment(row["payload"])})


def decode_event(data: bytes | str) -> Event:
    """The inverse of :func:`encode_event`."""
    r = orjson.loads(data)
    return Event.from_row(
        r["id"],
        r["time_us"],
        r["kind"],
        r["subject"],
        r["subject_version"],
        r["request_id"],
        r["trace_id"],
        r["actor"],
        r["payload"],
    )


# -- filters ---------------------------------------------------------------------------


class Matcher:
    """``Filters`` as a test on one event: the SQL clauses' meaning, in the client."""

    __slots__ = ("actor", "exact", "prefixes", "request_id", "since", "subject", "until")

    def __init__(self, filters: Filters) -> None:
        patterns = filters.patterns
        self.exact = frozenset(p for p in patterns if not p.endswith(".*")) or None
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith(".*")) or None
        self.subject = filters.subject
        self.request_id = filters.request_id
        self.actor = filters.actor
        self.since = None if filters.since is None else to_us(filters.since, "since")
        self.until = None if filters.until is None else to_us(filters.until, "until")

    def __call__(self, event: Event) -> bool:
        if self.exact is not None or self.prefixes is not None:
            exact = self.exact is not None and event.kind in self.exact
            prefixed = self.prefixes is not None and event.kind.startswith(self.prefixes)
            if not (exact or prefixed):
                return False
        if self.subject is not None and event.subject != self.subject:
            return False
        if self.request_id is not None and event.request_id != self.request_id:
            return False
        if self.actor is not None and event.actor != self.actor:
            return False
        if self.since is not None and event.time_us < self.since:
            return False
        return self.until is None or event.time_us < self.until


def kind_of(filters: Filters) -> str | None:
    """The one kind pattern a backend may apply itself; None for every kind, or several."""
    patterns = filters.patterns
    return patterns[0] if len(patterns) == 1 else None


# -- URL options -----------------------------------------------------------------------


def check_query(url: BackendURL, allowed: Collection[str]) -> None:
    """Refuse URL options this event log does not know (a typo must not be ignored)."""
    check_options(url, allowed, "event log")


# -- what a backend provides -----------------------------------------------------------


class Connection(Protocol):
    """The backend's connection: closed with the log, renewed in a forked child."""

    def close(self) -> None: ...

    def reset_after_fork(self) -> None: ...

    def in_own_thread(self) -> bool:
        """True when called from a thread the connection runs (closing there would deadlock)."""
        ...


class Feed(Protocol):
    """New entries after a position, for :meth:`StreamEventLog.follow`."""

    def next(self, wait: float) -> list[tuple[int, Event]]:
        """Entries stored since the last call; waits up to ``wait`` seconds for one."""
        ...

    def close(self) -> None: ...


class StreamEventLog(EventLog):
    """An :class:`EventLog` whose events live in a stream. Subclasses give the primitives."""

    def __init__(self, url: BackendURL, writer: BatchWriter, connection: Connection) -> None:
        self._connection = connection
        super().__init__(url, writer, connection.close, in_own_thread=connection.in_own_thread)

    # -- primitives ---------------------------------------------------------------------

    @abstractmethod
    def _errors(self) -> AbstractContextManager[None]:
        """Turn the driver's errors into ConveyorErrors naming the service."""

    @abstractmethod
    def _entries(
        self, kind: str | None, after: int | None, descending: bool, first: int
    ) -> Entries:
        """Stored events in position order, strictly after ``after`` (None: from the
        start, or from the end when descending). ``kind`` (exact or ``x.*``) may be
        applied or not: the caller tests every event again. ``first`` is how many
        entries the caller expects to need, the size of the first read."""

    @abstractmethod
    def _count_kind(self, kind: str | None) -> int | None:
        """How many events of ``kind`` (None: all) the server can count; None to scan."""

    @abstractmethod
    def _last_position(self) -> int:
        """The position of the newest entry (0 when empty)."""

    @abstractmethod
    def _position_of(self, event: Event) -> int | None:
        """Where ``event`` is stored, or None."""

    @abstractmethod
    def _feed(self, kind: str | None, after: int) -> Feed:
        """Entries stored after position ``after``, as they come."""

    @abstractmethod
    def _delete(self, doomed: list[tuple[int, str]]) -> None:
        """Delete the entries at these (position, event id)."""

    @abstractmethod
    def _facts(self) -> dict[str, Any]:
        """What :meth:`health` adds about the stream (its name, how many messages)."""

    # -- the EventLog methods that read or delete ----------------------------------------

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
        """One page of events in stream order; pass ``next_cursor`` for the next."""
        check_limit(limit)
        filters = Filters(kind, subject, since, until, request_id, actor)
        after = None if cursor is None else decode_seq_cursor(cursor, descending)
        self._check_open()
        match = Matcher(filters)
        found: list[tuple[int, Event]] = []
        with (
            self._errors(),
            closing(self._entries(kind_of(filters), after, descending, limit + 1)) as entries,
        ):
            for position, event in entries:
                if match(event):
                    found.append((position, event))
                    if len(found) > limit:
                        break
        next_cursor = None
        if len(found) > limit:
            next_cursor = encode_seq_cursor(found[limit - 1][0], descending)
        return Page([event for _, event in found[:limit]], next_cursor)

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
        """How many events match (the server counts by kind; other filters scan)."""
        filters = Filters(kind, subject, since, until, request_id, actor)
        self._check_open()
        only_kind = subject is None and since is None and until is None and request_id is None
        if only_kind and actor is None and len(filters.patterns) <= 1:
            with self._errors():
                counted = self._count_kind(kind_of(filters))
            if counted is not None:
                return counted
        match = Matcher(filters)
        n = 0
        with (
            self._errors(),
            closing(self._entries(kind_of(filters), None, False, CHUNK)) as entries,
        ):
            for _, event in entries:
                n += match(event)
        return n

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
        """Matching events stored after a starting point, as they are stored.

        The start is fixed when this is called: the newest entry, or ``after``
        (NotFoundError if it is not stored). Each wait for new entries lasts at
        most ``poll_interval`` seconds (and 1 s); an entry is yielded as soon as it
        arrives. Stops after ``idle_timeout`` seconds without a matching event.
        ``late_window`` has no use here: positions are given at storage.
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
        with self._errors():
            start = self._last_position() if after is None else self._position_of(after)
        if start is None:
            assert after is not None
            raise NotFoundError(
                f"no event with id {after.id!r} to follow from", field="after", id=after.id
            )
        return self._following(filters, start, min(poll_interval, MAX_WAIT), idle_timeout)

    def _following(
        self, filters: Filters, start: int, wait: float, idle_timeout: float | None
    ) -> Iterator[Event]:
        match = Matcher(filters)
        last_event = monotonic()
        with self._errors(), closing(self._feed(kind_of(filters), start)) as feed:
            while True:
                self._check_open()
                timeout = wait
                if idle_timeout is not None:
                    left = idle_timeout - (monotonic() - last_event)
                    if left <= 0:
                        return
                    timeout = max(min(wait, left), 0.001)
                try:
                    entries = feed.next(timeout)
                except Exception:
                    self._check_open()  # closed under the follower: say that, not the symptom
                    raise
                found = [event for _, event in entries if match(event)]
                if found:
                    yield from found
                    last_event = monotonic()

    def erase(self, field: str, value: Any) -> int:
        """Delete every event holding ``field == value`` in its payload (any depth) or
        ``field:value`` as its subject; return how many. Scans the stream; flushes first.
        """
        from conveyor.events.erase import holds

        self.flush()
        subject = f"{field}:{value}"
        doomed: list[tuple[int, str]] = []
        with self._errors():
            with closing(self._entries(None, None, False, CHUNK)) as entries:
                for position, event in entries:
                    if event.subject == subject or holds(event.payload, field, value):
                        doomed.append((position, event.id))
            if doomed:
                self._delete(doomed)
        return len(doomed)

    # -- health and lifecycle ----------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What ``conveyor doctor`` shows: backend, URL (no password), the stream, backlog."""
        self._check_open()
        with self._errors():
            facts = self._facts()
        return {
            "seam": _SEAM,
            "backend": self.url.scheme,
            "url": str(self.url),
            **facts,
            **self.stats(),
            "spill_dir": str(self._writer.spill.folder) if self._writer.spill else None,
        }

    def after_fork_in_child(self) -> None:
        """Called by the fork hook in a child process; not for direct use."""
        self._connection.reset_after_fork()
        self._writer.reset_after_fork()
