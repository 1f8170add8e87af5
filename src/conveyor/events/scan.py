"""Reading the SQL event log in ``seq`` order, in bulk, up to a settled horizon.

A reader that copies the log elsewhere (the monitoring capability's columnar copy)
pages by ``seq`` and remembers the last one it copied. That is only safe below a
*settled* seq: on PostgreSQL ``seq`` comes from a sequence when a row is inserted,
not when it commits, so with several writers a transaction holding seq 41 can
commit after seq 42 is visible (see ``follow.py``). A reader that copied through 42
and moved its mark there would never copy 41.

:func:`settled_seq` finds a horizon below which every seq is final (committed, or
never to be: a rolled-back batch or an insert skipped as a duplicate id consumes
sequence numbers too):

- SQLite: writers commit one at a time in seq order, so the highest visible seq is
  settled;
- PostgreSQL: read the highest visible seq ``M``, then the write transactions in
  progress (``pg_current_snapshot()``), and wait until each of them has ended. A
  transaction holding a seq below ``M`` took it before the one holding ``M`` did,
  so it is one of those (its transaction id is assigned as its first row is
  written, microseconds after taking the seq; a pause before the snapshot makes
  that gap a non-issue). When they do not all end within ``timeout`` (a
  long transaction elsewhere in the database), the horizon is the end of the
  contiguous run of seqs above ``after``: every seq in it is visible, hence final.

:func:`scan` returns raw rows (the payload as JSON text on both backends) so a bulk
reader pays for no :class:`~conveyor.events.schema.Event` per row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor.events.filters import Filters
from conveyor.events.table import COLUMNS, events

__all__ = ["SCAN_COLUMNS", "scan", "settled_seq"]

#: The columns of a scanned row, in order: ``seq`` then the event's columns.
SCAN_COLUMNS: tuple[str, ...] = ("seq", *COLUMNS)

#: PostgreSQL: the pause between reading the highest seq and the transactions in progress.
_SNAPSHOT_PAUSE_S = 0.05
_POLL_S = 0.01


def settled_seq(conn: Connection, *, after: int = 0, timeout: float = 10.0) -> int:
    """The highest seq at or below which every event is committed or never will be.

    ``after`` is a seq already known to be settled (the reader's mark): the result is
    never below it.
    """
    high = conn.execute(sa.select(sa.func.max(events.c.seq))).scalar() or 0
    if high <= after:
        return after
    if conn.dialect.name != "postgresql":
        return int(high)
    conn.commit()  # end the statement's snapshot: the next reads must be newer
    time.sleep(_SNAPSHOT_PAUSE_S)
    waiting = [
        str(x)
        for x in conn.execute(
            sa.text("SELECT pg_snapshot_xip(pg_current_snapshot())::text")
        ).scalars()
    ]
    deadline = time.monotonic() + timeout
    while waiting:
        status = conn.execute(
            sa.text(
                "SELECT x::text FROM unnest(CAST(:xids AS xid8[])) AS x "
                "WHERE pg_xact_status(x) = 'in progress'"
            ),
            {"xids": "{" + ",".join(waiting) + "}"},
        ).scalars()
        waiting = list(status)
        conn.commit()
        if not waiting:
            break
        if time.monotonic() >= deadline:
            return _contiguous_end(conn, after, int(high))
        time.sleep(_POLL_S)
    return int(high)


def _contiguous_end(conn: Connection, after: int, high: int) -> int:
    """The last seq of the unbroken run ``after + 1, after + 2, ...`` (at most ``high``)."""
    seq = events.c.seq
    first = conn.execute(sa.select(sa.func.min(seq)).where(seq > after)).scalar()
    if first is None or first != after + 1:
        return after
    nxt = events.alias("nxt")
    end = conn.execute(
        sa.select(sa.func.min(seq)).where(
            seq > after,
            seq <= high,
            ~sa.exists().where(nxt.c.seq == seq + 1),
        )
    ).scalar()
    return high if end is None else min(int(end), high)


def scan(
    conn: Connection,
    *,
    after: int,
    through: int | None = None,
    limit: int | None = None,
    filters: Filters | None = None,
) -> list[tuple[Any, ...]]:
    """Rows with ``after < seq <= through`` (matching ``filters``), in seq order, at most
    ``limit``: tuples in :data:`SCAN_COLUMNS` order, the payload as JSON text."""
    columns: list[Any] = [events.c.seq, *(events.c[name] for name in COLUMNS[:-1])]
    if conn.dialect.name == "postgresql":
        # JSONB's text, not a dict: a bulk reader parses it (or not) itself.
        columns.append(sa.cast(events.c.payload, sa.Text).label("payload"))
    else:
        columns.append(events.c.payload)
    clauses: list[Any] = [events.c.seq > after]
    if through is not None:
        clauses.append(events.c.seq <= through)
    if filters is not None:
        clauses.extend(filters.clauses())
    stmt = sa.select(*columns).where(*clauses).order_by(events.c.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    if conn.dialect.name == "postgresql":
        # Right after a bulk insert (stale statistics) PostgreSQL plans "seq > X ORDER BY
        # seq LIMIT n" as a scan of the whole table and a sort: 2 s on 10M events to read a
        # tail of 5,000. The primary key walks a seq range in order, whatever its size.
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
    result: Sequence[Any] = conn.execute(stmt).all()
    return [tuple(row) for row in result]
