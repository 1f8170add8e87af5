"""Alembic migrations run from code: one chain per owner of tables.

The metadata store's own tables (runs, reports) are the ``core`` chain; each
capability that declares :class:`~conveyor.capability.Tables` brings its own
chain, with its own version table, applied after the chains of the
capabilities it requires (Django's one-chain-per-app). The event log keeps its
own chain too, so it can share a PostgreSQL database or live in its own file.

:func:`upgrade_all` is safe to call from several processes at once (server
workers starting together): the whole check-and-upgrade runs in one
transaction holding a lock (a transaction-scoped advisory lock on
PostgreSQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite), and the
current revisions are read again once the lock is held. When nothing is to
be done it costs one read of the version tables and takes no lock.

Databases made before capabilities owned their tables kept every table in one
chain (``conveyor_store_version`` at revision ``0004``). Such a database is
*adopted*: each chain that declares a ``legacy_baseline`` is stamped at it
(its tables are already there, as that revision would create them), the old
version table is dropped, and the chains go on from there. Nothing is copied
or lost.

An empty database (SQLite: no table, index or view at all; PostgreSQL: nothing in the schema
tables go to) gets the writes the migrations made in the last empty one this process
migrated with the same chains at the same heads, replayed as the driver got them: every
migration runs once per process, and the next empty database costs a few milliseconds
instead of Alembic's 0.15 s (SQLite) to 0.5 s (PostgreSQL). A database with anything in it,
another set of chains or heads, or a replay that fails (rolled back to its savepoint)
migrates step by step.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import logging
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from conveyor.errors import BackendError

log = logging.getLogger(__name__)

__all__ = [
    "CORE",
    "LEGACY_HEAD",
    "LEGACY_VERSION_TABLE",
    "Chain",
    "current_revision",
    "head_revision",
    "owned_tables",
    "revisions",
    "run_environment",
    "store_chains",
    "upgrade",
    "upgrade_all",
]

#: The one version table of databases made before capabilities owned their tables.
LEGACY_VERSION_TABLE = "conveyor_store_version"
#: The only revision such a database can be adopted from (the last one released).
LEGACY_HEAD = "0004"


@dataclass(frozen=True, slots=True)
class Chain:
    """One migration chain: who owns it, where its scripts are, where its revision is kept."""

    name: str
    script_location: str
    version_table: str
    models: str | None = None
    """The module declaring the chain's ORM tables (None: tables declared elsewhere)."""
    legacy_baseline: str | None = None


#: The metadata store's own chain: runs, reports and their checks.
CORE = Chain(
    "core", "conveyor.store:migrations", "conveyor_core_version", "conveyor.store.models", "0001"
)


def store_chains() -> list[Chain]:
    """The core chain, then each capability's, in dependency order."""
    from conveyor.capability import capabilities

    chains = [CORE]
    for declared in capabilities():
        if declared.tables is not None:
            tables = declared.tables
            chains.append(
                Chain(
                    declared.name,
                    tables.migrations,
                    tables.version_table,
                    tables.models,
                    tables.legacy_baseline,
                )
            )
    return chains


def owned_tables(chain: Chain) -> set[str]:
    """The names of the tables ``chain``'s models module declares."""
    if chain.models is None:
        return set()
    from conveyor.store.models import Base

    module = importlib.import_module(chain.models)
    return {
        str(mapper.class_.__tablename__)
        for mapper in Base.registry.mappers
        if mapper.class_.__module__ == module.__name__
    }


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


def revisions(conn: Connection, chains: Iterable[Chain]) -> dict[str, str | None]:
    """Each chain's current revision (None: not created yet)."""
    present = set(sa.inspect(conn).get_table_names())
    found: dict[str, str | None] = {}
    for chain in chains:
        found[chain.name] = (
            current_revision(conn, chain.version_table) if chain.version_table in present else None
        )
    return found


def upgrade(engine: Engine, script_location: str, version_table: str) -> str | None:
    """Bring one chain to its newest revision; return the revision it is at."""
    chain = Chain(version_table, script_location, version_table)
    return upgrade_all(engine, [chain])[chain.name]


def upgrade_all(engine: Engine, chains: Sequence[Chain]) -> dict[str, str | None]:
    """Bring every chain to its head, in order; return each chain's revision.

    An empty database gets the writes this process's last empty one got from the same chains
    at the same heads, replayed (:class:`_Replay`), instead of every migration again.
    """
    from conveyor.store.engine import READ

    heads = {chain.name: head_revision(chain.script_location) for chain in chains}
    adopting = any(chain.legacy_baseline for chain in chains)
    with engine.connect().execution_options(**READ) as conn:
        # Fast path: nothing to do, and no write lock taken.
        legacy = adopting and sa.inspect(conn).has_table(LEGACY_VERSION_TABLE)
        if not legacy and revisions(conn, chains) == heads:
            conn.rollback()
            return heads
        conn.rollback()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            key = zlib.crc32(",".join(c.version_table for c in chains).encode())
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        if adopting and sa.inspect(conn).has_table(LEGACY_VERSION_TABLE):
            _adopt_legacy(conn, chains)
        current = revisions(conn, chains)
        recorded = _replay_key(conn, chains, heads)
        empty = _is_empty(conn)
        if empty and recorded in _REPLAYS and _REPLAYS[recorded].run(conn):
            return heads
        # only an empty database's migrations are recorded: a data migration in a full one
        # would have its rows copied for nothing
        replay = _Replay()
        with replay.recording(conn) if empty else contextlib.nullcontext():
            for chain in chains:
                if current[chain.name] != heads[chain.name]:
                    from alembic import command

                    command.upgrade(_chain_config(chain, conn), "head")
        if empty:
            _REPLAYS[recorded] = replay
    return heads


class _Replay:
    """The writes the migrations made in an empty database, in order, as the driver got them
    (every statement but the SELECTs: Alembic's reads of what is there)."""

    __slots__ = ("statements",)

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any, bool]] = []

    @contextlib.contextmanager
    def recording(self, conn: Connection) -> Iterator[None]:
        def record(
            _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool
        ) -> None:
            if statement.lstrip()[:6].upper() != "SELECT":
                self.statements.append((statement, copy.deepcopy(parameters), many))

        sa.event.listen(conn, "before_cursor_execute", record)
        try:
            yield
        finally:
            sa.event.remove(conn, "before_cursor_execute", record)

    def run(self, conn: Connection) -> bool:
        """Make the same writes in ``conn``'s empty database, inside a savepoint of its
        transaction; False (and nothing changed) if one of them fails there."""
        try:
            with conn.begin_nested():
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    for statement, parameters, many in self.statements:
                        if many:
                            cursor.executemany(statement, parameters)
                        else:
                            cursor.execute(statement, parameters)
                finally:
                    cursor.close()
        except Exception as e:  # the migrations then run step by step
            log.warning("replaying the recorded migrations failed (%s); migrating instead", e)
            return False
        return True


#: The writes of the migrations of each empty database this process migrated, by dialect,
#: driver, chains (owners, scripts, version tables) and heads: :func:`upgrade_all` replays them.
_REPLAYS: dict[tuple[Any, ...], _Replay] = {}


def _replay_key(
    conn: Connection, chains: Sequence[Chain], heads: dict[str, str | None]
) -> tuple[Any, ...]:
    return (
        conn.dialect.name,
        conn.dialect.driver,  # the statements are in its parameter style
        *((c.name, c.script_location, c.version_table, heads[c.name]) for c in chains),
    )


#: Whether the database (PostgreSQL: the schema tables are created in) holds nothing at all.
_EMPTY = {
    "sqlite": "SELECT count(*) FROM sqlite_master",
    "postgresql": (
        "SELECT (SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = current_schema())"
        " + (SELECT count(*) FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n"
        " ON n.oid = t.typnamespace WHERE n.nspname = current_schema())"
    ),
}


def _is_empty(conn: Connection) -> bool:
    query = _EMPTY.get(conn.dialect.name)
    return query is not None and conn.exec_driver_sql(query).scalar() == 0


def _chain_config(chain: Chain, conn: Connection) -> Any:
    cfg = _config(chain.script_location, chain.version_table, conn)
    cfg.attributes["models"] = chain.models
    return cfg


def _adopt_legacy(conn: Connection, chains: Sequence[Chain]) -> None:
    """Stamp each chain at its baseline on a database made before the split; see above."""
    legacy = current_revision(conn, LEGACY_VERSION_TABLE)
    if legacy != LEGACY_HEAD:
        raise BackendError(
            f"this metadata store was made by a pre-release build of Conveyor (schema "
            f"{LEGACY_VERSION_TABLE} at {legacy!r}); only databases at {LEGACY_HEAD!r} can be "
            "upgraded: open it once with that release, or start a new store",
            seam="store",
            revision=legacy,
        )
    from alembic import command

    current = revisions(conn, chains)
    for chain in chains:
        if chain.legacy_baseline and current[chain.name] is None:
            command.stamp(_chain_config(chain, conn), chain.legacy_baseline)
    conn.execute(sa.text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))


def run_environment() -> None:
    """The body of every chain's ``env.py``: migrate over the connection handed in.

    Migrations run from code only (:func:`upgrade_all`), which hands over an
    open connection (already inside the transaction that holds the migration
    lock), the version table and the chain's models module through
    ``config.attributes``. There is no offline (SQL script) mode.
    """
    from alembic import context

    from conveyor.store.models import Base

    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "Conveyor's migrations run from code: open the store with "
            "conveyor.store.MetadataStore.from_url(url), or call MetadataStore.migrate()"
        )
    models = config.attributes.get("models")
    owned = owned_tables(Chain("", "", "", models)) if models else set()

    def include_name(name: str | None, type_: str, parent: Any) -> bool:
        return type_ != "table" or name in owned

    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=config.attributes["version_table"],
        include_name=include_name,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
