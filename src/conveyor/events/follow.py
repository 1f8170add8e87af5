"""Following the log: yield events as they are committed (``conveyor events tail -f``).

Polling "rows with ``seq`` above the last one seen" is not enough on
PostgreSQL: ``seq`` comes from a sequence when a row is inserted, not when
it is committed, so with several writers a transaction holding seq 41 can
commit after another holding seq 42 has been read. A naive follower would
skip 41 forever.

So the follower tracks the seq numbers it has *not* seen below the highest
one it has (gaps). Each poll reads, in one snapshot, every committed seq
above the high mark or inside a gap; a gap that fills is an event committed
late, and it is yielded then (after events with higher seq). A gap can also
be permanent: a rolled-back batch, or an insert skipped because its id was
already stored, consumes sequence numbers. A gap is therefore watched for
``late_window`` seconds and then forgotten. The writer commits a batch
within milliseconds, so the default 10 s is generous; an event committed
later than that behind a higher seq is missed by the follower (it is still
in the log for ``query``). On SQLite writers commit one at a time in seq
order, so there are no late events; the same code runs and finds none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from time import monotonic, sleep

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor.errors import NotFoundError
from conveyor.events.schema import Event
from conveyor.events.table import COLUMNS, events

__all__ = ["Follower"]

#: Committed seqs read per poll; more waiting means the next poll comes at once.
_POLL_ROWS = 5_000
#: Gap seqs watched at most (the oldest are forgotten first).
_MAX_GAPS = 10_000
#: When starting, how far below the high mark to look for gaps.
_START_WINDOW = 1_000

_SELECT = [events.c[name] for name in COLUMNS]


class Follower:
    """Yields events committed after it was created, each once.

    ``connect`` opens a read connection whose transaction is a snapshot (the
    caller arranges REPEATABLE READ on PostgreSQL; SQLite's deferred read
    transaction is one). ``check_open`` raises once the log is closed.
    """

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[Connection]],
        clauses: list[sa.ColumnElement[bool]],
        *,
        check_open: Callable[[], None],
        poll_interval: float,
        idle_timeout: float | None,
        late_window: float,
        after: str | None,
    ) -> None:
        self._connect = connect
        self._clauses = clauses
        self._check_open = check_open
        self._poll_interval = poll_interval
        self._idle_timeout = idle_timeout
        self._late_window = late_window
        self._high = 0
        self._gaps: dict[int, float] = {}  # seq -> when first missed (insertion order = age)
        self._start(after)

    def _start(self, after: str | None) -> None:
        """Fix the starting point: the newest event, or the event with id ``after``."""
        seq = events.c.seq
        with self._connect() as conn:
            if after is None:
                high = conn.execute(sa.select(sa.func.max(seq))).scalar() or 0
            else:
                high = conn.execute(sa.select(seq).where(events.c.id == after)).scalar()
                if high is None:
                    raise NotFoundError(
                        f"no event with id {after!r} to follow from", field="after", id=after
                    )
            low = max(0, high - _START_WINDOW)
            seen = conn.execute(
                sa.select(seq).where(seq > low, seq <= high).order_by(seq)
            ).scalars()
            self._note_new(low, list(seen), monotonic())
            self._high = high

    def __iter__(self) -> Iterator[Event]:
        last_event = monotonic()
        while True:
            self._check_open()
            found, more = self._poll()
            if found:
                yield from found
                last_event = monotonic()
            elif self._idle_timeout is not None and monotonic() - last_event >= self._idle_timeout:
                return
            if not more:
                sleep(self._poll_interval)

    def _poll(self) -> tuple[list[Event], bool]:
        seq = events.c.seq
        high = self._high
        now = monotonic()
        self._expire(now)
        committed = seq > high
        if self._gaps:
            committed = sa.or_(committed, seq.in_(list(self._gaps)))
        with self._connect() as conn:
            seqs = list(
                conn.execute(sa.select(seq).where(committed).order_by(seq).limit(_POLL_ROWS))
                .scalars()
                .all()
            )
            if not seqs:
                return [], False
            late = [s for s in seqs if s <= high]
            new = [s for s in seqs if s > high]
            for s in late:
                self._gaps.pop(s, None)
            new_high = new[-1] if new else high
            self._note_new(high, new, now)
            wanted = sa.and_(seq > high, seq <= new_high)
            if late:
                wanted = sa.or_(wanted, seq.in_(late))
            rows = conn.execute(
                sa.select(*_SELECT).where(wanted, *self._clauses).order_by(seq)
            ).all()
        self._high = new_high
        return [Event.from_row(*row) for row in rows], len(seqs) == _POLL_ROWS

    def _note_new(self, previous: int, new: list[int], now: float) -> None:
        """Record the seqs skipped between ``previous`` and each of ``new`` as gaps."""
        for s in new:
            missing = s - previous - 1
            # More missing seqs than any set of open batches could hold is a
            # rollback or sequence jump, not transactions in flight.
            if 0 < missing <= _MAX_GAPS:
                for g in range(previous + 1, s):
                    self._gaps[g] = now
            previous = s
        while len(self._gaps) > _MAX_GAPS:
            del self._gaps[next(iter(self._gaps))]

    def _expire(self, now: float) -> None:
        cutoff = now - self._late_window
        gaps = self._gaps
        while gaps:
            oldest = next(iter(gaps))
            if gaps[oldest] > cutoff:
                break
            del gaps[oldest]
