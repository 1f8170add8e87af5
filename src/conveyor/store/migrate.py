"""Alembic migrations run from code, for every SQL-backed seam.

Each seam that owns tables (the metadata store, the event log) keeps its own
migration scripts and its own version table, so both can share one
PostgreSQL database or live in separate SQLite files.

:func:`upgrade` is safe to call from several processes at once (server
workers starting together): the whole check-and-upgrade runs in one
transaction holding a lock (a transaction-scoped advisory lock on
PostgreSQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite), and the
current revision is read again once the lock is held.
"""

from __future__ import annotations

import zlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["current_revision", "head_revision", "upgrade"]


def _config(script_location: str, version_table: str, connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["version_table"] = version_table
    cfg.attributes["connection"] = connection
    return cfg


def head_revision(script_location: str) -> str | None:
    """The newest revision among the scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config(script_location, "")).get_current_head()


def current_revision(conn: Connection, version_table: str) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(conn, opts={"version_table": version_table})
    return ctx.get_current_revision()


def upgrade(engine: Engine, script_location: str, version_table: str) -> str | None:
    """Bring the database to the newest revision; return the revision it is at."""
    from alembic import command

    head = head_revision(script_location)
    from conveyor.store.engine import READ

    with engine.connect().execution_options(**READ) as conn:
        # Fast path: nothing to do, and no write lock taken.
        if current_revision(conn, version_table) == head:
            conn.rollback()
            return head
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            key = zlib.crc32(version_table.encode())
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        if current_revision(conn, version_table) != head:
            command.upgrade(_config(script_location, version_table, conn), "head")
    return head
