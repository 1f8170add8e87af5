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

import functools
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
    """The newest revision among the scripts.

    Scripts are named ``NNNN_<what>.py`` with revision id ``NNNN``, each
    revising the one before (a test holds every migration folder to this), so
    the head is the largest prefix: found without importing Alembic, which
    costs a server start-up about 0.1 s when there is nothing to upgrade.
    """
    found = _numbered_head(script_location)
    if found is not None:
        return found
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config(script_location, "")).get_current_head()


@functools.cache
def _numbered_head(script_location: str) -> str | None:
    import importlib.util
    import re
    from pathlib import Path

    package, _, folder = script_location.partition(":")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    versions = Path(next(iter(spec.submodule_search_locations)), folder, "versions")
    numbers = [
        m.group(1)
        for p in versions.glob("*.py")
        if (m := re.match(r"^(\d{4})_\w+\.py$", p.name)) is not None
    ]
    return max(numbers) if numbers else None


def current_revision(conn: Connection, version_table: str) -> str | None:
    """The revision the database is at (None for an empty database).

    One SELECT on the version table, the one Alembic keeps; no Alembic import.
    """
    if not sa.inspect(conn).has_table(version_table):
        return None
    rows = conn.execute(sa.text(f"SELECT version_num FROM {version_table}")).scalars().all()
    if len(rows) > 1:  # branches: let Alembic say what it makes of them
        from alembic.runtime.migration import MigrationContext

        ctx = MigrationContext.configure(conn, opts={"version_table": version_table})
        return ctx.get_current_revision()
    return rows[0] if rows else None


def upgrade(engine: Engine, script_location: str, version_table: str) -> str | None:
    """Bring the database to the newest revision; return the revision it is at."""
    from conveyor.store.engine import READ

    head = head_revision(script_location)
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
            from alembic import command

            command.upgrade(_config(script_location, version_table, conn), "head")
    return head
