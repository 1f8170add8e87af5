"""Erasure: the one exception to "append-only", for data-subject deletion (GDPR).

The log never updates an event; when a person's data must go, the events that
hold it go entirely (an event with part of its payload cut out would be a
false record). The caller records the erasure itself as a new event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from conveyor.events.schema import load_payload
from conveyor.events.table import events

__all__ = ["erase_where", "holds"]

_BATCH = 1_000


def holds(payload: Any, field: str, value: Any) -> bool:
    """Whether ``payload`` has ``field == value`` at any depth (values compared as text too)."""
    if isinstance(payload, Mapping):
        for key, item in payload.items():
            if key == field and (item == value or str(item) == str(value)):
                return True
            if holds(item, field, value):
                return True
    elif isinstance(payload, list):
        return any(holds(item, field, value) for item in payload)
    return False


def erase_where(
    engine: Engine, predicate: Callable[[dict[str, Any], str | None], bool], needle: str
) -> int:
    """Delete events whose (payload, subject) satisfy ``predicate``; return how many.

    ``needle`` is a substring every matching event's payload or subject text
    contains: a SQL prefilter so that only candidates are decoded.
    """
    payload_text = sa.cast(events.c.payload, sa.Text)
    pattern = f"%{_escape(needle)}%"
    condition = sa.or_(
        payload_text.like(pattern, escape="\\"), events.c.subject.like(pattern, escape="\\")
    )
    doomed: list[int] = []
    with engine.connect() as conn:
        for seq, payload, subject in _scan(conn, condition):
            if predicate(load_payload(payload), subject):
                doomed.append(seq)
        conn.rollback()
    with engine.begin() as conn:
        for start in range(0, len(doomed), _BATCH):
            conn.execute(sa.delete(events).where(events.c.seq.in_(doomed[start : start + _BATCH])))
    if doomed and engine.dialect.name == "sqlite":
        # Deleted rows stay in free pages and the WAL until rewritten: purge them from the file.
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            raw.execute("VACUUM")
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return len(doomed)


def _scan(conn: sa.Connection, condition: Any) -> Iterator[tuple[int, Any, str | None]]:
    last = 0
    while True:
        rows = conn.execute(
            sa.select(events.c.seq, events.c.payload, events.c.subject)
            .where(condition, events.c.seq > last)
            .order_by(events.c.seq)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        yield from ((int(r[0]), r[1], r[2]) for r in rows)
        last = rows[-1][0]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
