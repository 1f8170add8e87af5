"""The ``events`` table (SQLAlchemy Core), shared by SQLite and PostgreSQL.

- ``seq`` is the insertion order and the key readers page on: a rowid alias
  on SQLite, a ``BIGSERIAL`` on PostgreSQL.
- ``time_us`` is integer microseconds since the Unix epoch: compact, fast to
  compare and index, and free of time-zone handling that differs between
  backends.
- ``payload`` is ``JSONB`` on PostgreSQL (queryable, indexable later) and
  text holding orjson output on SQLite. Payloads reach the driver already
  serialised (the caller's thread did it, to reject bad input early); the
  column type passes that text through instead of encoding it again.

The migration in ``migrations/versions`` creates exactly this; a test compares
the two on both backends.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from conveyor.events.schema import MAX_KIND_LENGTH, MAX_TEXT_LENGTH

__all__ = ["COLUMNS", "Payload", "events", "insert_statement", "metadata"]

metadata = sa.MetaData()


class Payload(sa.types.TypeDecorator[Any]):
    """JSON text in, a dict out: ``JSONB`` on PostgreSQL, ``TEXT`` elsewhere."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.Text())

    def bind_processor(self, dialect: Dialect) -> None:
        # Values are JSON text already (schema.dump_payload); JSONB's own
        # processor would encode that string a second time. PostgreSQL gets
        # the text with a ::JSONB cast (the psycopg dialect renders it).
        # Results need no processing here either: SQLite returns the text,
        # psycopg returns decoded JSONB, and schema.load_payload takes both.
        return None


_TEXT = sa.String(MAX_TEXT_LENGTH)

events = sa.Table(
    "events",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("id", sa.String(32), nullable=False),
    sa.Column("time_us", sa.BigInteger(), nullable=False),
    sa.Column("kind", sa.String(MAX_KIND_LENGTH), nullable=False),
    sa.Column("subject", _TEXT),
    sa.Column("subject_version", _TEXT),
    sa.Column("request_id", _TEXT),
    sa.Column("trace_id", _TEXT),
    sa.Column("actor", _TEXT),
    sa.Column("payload", Payload(), nullable=False),
    sa.Index("ux_events_id", "id", unique=True),
    sa.Index("ix_events_kind_time", "kind", "time_us"),
    sa.Index("ix_events_subject_time", "subject", "time_us"),
    sa.Index("ix_events_time", "time_us"),
    sa.Index("ix_events_request_id", "request_id"),
)

#: The columns an event is made of, in ``Event.from_row`` argument order.
COLUMNS = (
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


def insert_statement(dialect_name: str) -> sa.Insert:
    """An INSERT that ignores an event whose id is already stored.

    Appends are idempotent by id, so a batch retried after an ambiguous
    failure (the commit may or may not have happened) never stores an event
    twice, and re-appending an event to wait for it is safe.
    """
    if dialect_name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(events).on_conflict_do_nothing(index_elements=["id"])
    if dialect_name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(events).on_conflict_do_nothing(index_elements=["id"])
    raise ValueError(f"no event log insert for the {dialect_name} dialect")
