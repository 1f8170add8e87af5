"""The metadata store: one SQL database (SQLite or PostgreSQL) behind a URL.

::

    with MetadataStore.from_url(BackendURL.parse("sqlite:///.conveyor/conveyor.db")) as store:
        run = store.runs.start("train", "fraud-v3", params={"lr": 0.1})
        with store.session() as session:   # one transaction
            ...

:meth:`MetadataStore.session` is the only way to write: one transaction,
committed on success and rolled back on any exception, with driver errors
translated at the boundary (a stale version becomes
:class:`ConcurrentUpdateError`, a duplicate key :class:`AlreadyExistsError`,
a lost server :class:`BackendUnavailableError`). Repositories built on it
(:attr:`MetadataStore.runs`, :mod:`conveyor.checks.persist`) hand back frozen
snapshots, never live ORM objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.orm.exc import StaleDataError

from conveyor.backends import BackendURL, Closeable
from conveyor.errors import (
    AlreadyExistsError,
    ClosedError,
    ConcurrentUpdateError,
    InvalidInputError,
)
from conveyor.store import migrate as migrations
from conveyor.store.engine import READ, connect_check, create_engine, translate_errors
from conveyor.store.paging import Page, check_limit, decode_cursor, encode_cursor
from conveyor.store.types import aware_utc, dump_json

if TYPE_CHECKING:
    from conveyor.store.runs import RunRepository

__all__ = [
    "SEAM",
    "MetadataStore",
    "keyset",
    "page",
    "page_of",
]

T = TypeVar("T")
S = TypeVar("S", bound=sa.Select[Any])

SEAM = "store"

# SQLSTATE / SQLite extended codes of a duplicate key.
_PG_UNIQUE_VIOLATION = "23505"
_SQLITE_DUPLICATE = ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")


class MetadataStore(Closeable):
    """Runs, reports and every mutable record, in SQLite or PostgreSQL.

    Build it with :meth:`from_url` (or ``conveyor.backends.STORE.open(url)``)
    and close it with ``with``. It is safe to share between threads: each
    :meth:`session` takes its own connection from the pool.
    """

    def __init__(self, engine: Engine, url: BackendURL) -> None:
        self._engine: Engine | None = engine
        self._url = url
        read_options: dict[str, Any] = (
            dict(READ) if engine.dialect.name == "sqlite" else {"postgresql_readonly": True}
        )
        self._read_engine: Engine = engine.execution_options(**read_options)
        self._runs: RunRepository | None = None

    @classmethod
    def from_url(cls, url: BackendURL | str, *, migrate: bool = True) -> MetadataStore:
        """Connect (BackendUnavailableError naming host and port if that fails) and migrate.

        Migrating brings the store's own tables and every installed capability's
        to their newest revision (:func:`conveyor.store.migrate.upgrade_all`).
        """
        url = BackendURL.parse(url)
        engine = create_engine(url, SEAM, json_serializer=dump_json)
        try:
            connect_check(engine, url, SEAM)
            if migrate:
                with translate_errors(url, SEAM):
                    migrations.upgrade_all(engine, migrations.store_chains())
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, url)

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> BackendURL:
        return self._url

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise self._closed_error()
        return self._engine

    @property
    def closed(self) -> bool:
        return self._engine is None

    def close(self) -> None:
        """Release every pooled connection; calling it again does nothing."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def __enter__(self) -> MetadataStore:
        self.engine  # noqa: B018 -- refuse to enter a closed store
        return self

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<MetadataStore {self._url}{state}>"

    def _closed_error(self) -> ClosedError:
        return ClosedError(
            f"the metadata store at {self._url} is closed; open a new one with "
            "MetadataStore.from_url(...)",
            seam=SEAM,
        )

    # -- transactions --------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One read-write transaction: commit on success, roll back on any exception."""
        engine = self.engine
        with (
            self._translate(),
            Session(engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction; it is always rolled back.

        On SQLite it begins DEFERRED, so readers never wait for a writer's
        lock (WAL lets them read the last committed state meanwhile); on
        PostgreSQL the transaction is READ ONLY, so a stray write fails.
        """
        self.engine  # noqa: B018 -- ClosedError before touching the pool
        with self._translate(), Session(self._read_engine, expire_on_commit=False) as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            with translate_errors(self._url, SEAM):
                yield
        except StaleDataError as exc:
            raise ConcurrentUpdateError(
                f"a row was changed by someone else since it was read ({exc}); "
                "read it again, re-apply the change and retry",
                seam=SEAM,
            ) from exc
        except sa.exc.IntegrityError as exc:
            if _is_duplicate(exc):
                raise AlreadyExistsError(
                    f"that record already exists: {_first_line(exc.orig)}", seam=SEAM
                ) from exc
            raise InvalidInputError(
                f"the metadata store refused the write: {_first_line(exc.orig)}", seam=SEAM
            ) from exc
        except sa.exc.DataError as exc:
            # a value the database cannot hold (NUL in PostgreSQL text, a number out of
            # its column's range): the caller's input, not the server, is at fault
            raise InvalidInputError(
                f"the metadata store refused a value: {_first_line(exc.orig)}", seam=SEAM
            ) from exc

    # -- health --------------------------------------------------------------

    def ping(self) -> None:
        """Run ``SELECT 1``; raise BackendUnavailableError if the database does not answer."""
        connect_check(self.engine, self._url, SEAM)

    def revisions(self) -> dict[str, str | None]:
        """Each migration chain's revision in the database (None: not created yet)."""
        with translate_errors(self._url, SEAM), self.engine.connect() as conn:
            found = migrations.revisions(conn, migrations.store_chains())
            conn.rollback()
            return found

    @staticmethod
    def head_revisions() -> dict[str, str | None]:
        """The newest revision of each chain this installation ships."""
        return {
            c.name: migrations.head_revision(c.script_location) for c in migrations.store_chains()
        }

    def migrate(self) -> dict[str, str | None]:
        """Bring every chain to its head (safe from several processes at once)."""
        with translate_errors(self._url, SEAM):
            return migrations.upgrade_all(self.engine, migrations.store_chains())

    def health(self) -> dict[str, Any]:
        """What ``conveyor doctor`` shows: backend, redacted URL, each chain's revision and head.

        ``migrated`` is False while some chain is behind this installation
        (opening the store with ``migrate=True`` brings it up). Raises
        BackendUnavailableError when the database does not answer.
        """
        heads = self.head_revisions()
        current = self.revisions()
        behind = sorted(name for name, head in heads.items() if current.get(name) != head)
        return {
            "seam": SEAM,
            "backend": self._url.scheme,
            "url": str(self._url),
            "revisions": current,
            "heads": heads,
            "behind": behind,
            "migrated": not behind,
        }

    def schema_diff(self) -> list[Any]:
        """Differences between the database schema and the models (empty when they agree).

        Alembic's autogenerate comparison over every chain's tables; tables no
        chain owns (another seam's, in a shared database) are left out.
        """
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.migration import MigrationContext

        from conveyor.store.models import Base

        owned: set[str] = set()
        for chain in migrations.store_chains():
            owned |= migrations.owned_tables(chain)

        def include_name(name: str | None, type_: str, parent: Any) -> bool:
            return type_ != "table" or name in owned

        def include_object(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
            return type_ != "table" or name in owned

        with translate_errors(self._url, SEAM), self.engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_name": include_name,
                    "include_object": include_object,
                    "compare_type": True,
                },
            )
            diff: list[Any] = compare_metadata(context, Base.metadata)
            conn.rollback()
            return diff

    # -- repositories --------------------------------------------------------

    @property
    def runs(self) -> RunRepository:
        """Training, pipeline and other runs: params, metrics, artifacts, status."""
        from conveyor.store.runs import RunRepository

        self.engine  # noqa: B018 -- ClosedError for a closed store
        if self._runs is None:
            self._runs = RunRepository(self)
        return self._runs


def _is_duplicate(exc: sa.exc.IntegrityError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == _PG_UNIQUE_VIOLATION:
        return True
    return getattr(orig, "sqlite_errorname", None) in _SQLITE_DUPLICATE


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- newest-first keyset listings, shared by every repository ----------------


def page(
    store: MetadataStore,
    stmt: sa.Select[Any],
    time_col: QueryableAttribute[datetime],
    id_col: QueryableAttribute[str],
    convert: Callable[[Any], T],
    *,
    limit: int,
    cursor: str | None,
    listing: str,
) -> Page[T]:
    """One newest-first keyset page of ``stmt``'s rows, each turned into a snapshot by ``convert``.

    The snapshot must carry the time and id under the columns' names.
    """
    stmt = keyset(stmt, time_col, id_col, limit=limit, cursor=cursor, listing=listing)
    with store.read() as session:
        items = [convert(row) for row in session.scalars(stmt)]
    return page_of(items, limit, lambda i: (getattr(i, time_col.key), getattr(i, id_col.key)))


def keyset(
    stmt: S,
    time_col: QueryableAttribute[datetime],
    id_col: QueryableAttribute[str],
    *,
    limit: int,
    cursor: str | None,
    listing: str,
) -> S:
    """``stmt`` ordered newest first on (time, id), from just after ``cursor``, one row extra.

    The extra row tells :func:`page_of` whether a next page exists without a
    second query; the id breaks ties between rows written in the same microsecond.
    """
    check_limit(limit)
    if cursor is not None:
        at, last_id = _decode_time_cursor(cursor, listing)
        stmt = stmt.where(sa.or_(time_col < at, sa.and_(time_col == at, id_col < last_id)))
    return stmt.order_by(time_col.desc(), id_col.desc()).limit(limit + 1)


def page_of(items: Sequence[T], limit: int, key: Callable[[T], tuple[datetime, str]]) -> Page[T]:
    """The page for rows fetched by :func:`keyset` (which asked for ``limit + 1``)."""
    if len(items) <= limit:
        return Page(items=list(items))
    at, last_id = key(items[limit - 1])
    return Page(items=list(items[:limit]), next_cursor=encode_cursor(at.isoformat(), last_id))


def _decode_time_cursor(cursor: str, listing: str) -> tuple[datetime, str]:
    if not isinstance(cursor, str):
        raise InvalidInputError(f"malformed page cursor {cursor!r}", field="cursor")
    at, last_id = decode_cursor(cursor, 2)
    try:
        if not isinstance(at, str) or not isinstance(last_id, str):
            raise ValueError("cursor fields are not strings")
        return aware_utc(datetime.fromisoformat(at), "cursor"), last_id
    except ValueError as exc:  # InvalidInputError is one too
        raise InvalidInputError(
            f"page cursor {cursor!r} is not for the {listing} listing", field="cursor"
        ) from exc
