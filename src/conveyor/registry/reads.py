"""The registry's hot reads: prebuilt statements on a plain read-only connection.

Resolving ``name@champion`` happens on every model load and, in a server,
on every policy refresh. An ORM session and a freshly built statement cost
more than the query itself (0.6 ms against 0.15 ms on SQLite), so lookups
use statements built once with bound parameters, on a Core connection that
begins DEFERRED on SQLite (never taking the write lock), with driver errors
translated as the store's own sessions translate them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

    from conveyor.registry.versions import ModelVersion
    from conveyor.store.database import MetadataStore

__all__ = [
    "Reads",
    "by_alias",
    "by_id",
    "by_number",
    "document",
    "latest",
    "select_versions",
    "version_columns",
    "version_from_row",
]


@functools.cache
def version_columns() -> tuple[sa.ColumnElement[Any], ...]:
    """Every column of ``model_versions``; JSON documents come back as their text.

    The engine decodes JSON with the standard library, which is most of the
    cost of a page of 100 versions (7 documents a row); :func:`document`
    decodes the text with orjson instead.
    """
    import sqlalchemy as sa

    from conveyor.registry.tables import ModelVersionRecord

    columns: list[sa.ColumnElement[Any]] = []
    for column in ModelVersionRecord.__table__.c:
        if isinstance(column.type, sa.JSON):
            # A SQL cast, not only a result type: psycopg would otherwise decode JSONB
            # itself (with the standard library) before SQLAlchemy sees the value.
            columns.append(sa.cast(column, sa.Text()).label(column.name))
        else:
            columns.append(column)
    return tuple(columns)


@functools.cache
def _json_positions() -> tuple[int, ...]:
    import dataclasses

    import sqlalchemy as sa

    from conveyor.registry.tables import ModelVersionRecord
    from conveyor.registry.versions import ModelVersion

    table = ModelVersionRecord.__table__.c
    names = [c.name for c in table]
    if names != [f.name for f in dataclasses.fields(ModelVersion)]:
        raise AssertionError("ModelVersion's fields must follow model_versions' columns in order")
    return tuple(i for i, c in enumerate(table) if isinstance(c.type, sa.JSON))


def version_from_row(row: Any) -> ModelVersion:
    """A :class:`ModelVersion` from a row of :func:`version_columns`, positionally (fast)."""
    from conveyor.registry.versions import ModelVersion

    values = list(row)
    for i in _json_positions():
        values[i] = document(values[i])
    if values[-2] is None:  # inputs: NULL for versions registered before it existed
        values[-2] = []
    return ModelVersion(*values)


def document(value: Any) -> Any:
    """A JSON column's value, decoded if it came back as text."""
    if isinstance(value, str | bytes):
        import orjson

        return orjson.loads(value)
    return value


def select_versions() -> sa.Select[Any]:
    import sqlalchemy as sa

    return sa.select(*version_columns())


@functools.cache
def by_alias() -> sa.Select[Any]:
    import sqlalchemy as sa

    from conveyor.registry.tables import ModelAliasRecord as A
    from conveyor.registry.tables import ModelVersionRecord as V

    return (
        select_versions()
        .join(A, A.version_id == V.id)
        .where(A.model == sa.bindparam("name"), A.alias == sa.bindparam("alias"))
    )


@functools.cache
def by_number() -> sa.Select[Any]:
    import sqlalchemy as sa

    from conveyor.registry.tables import ModelVersionRecord as V

    return select_versions().where(
        V.model == sa.bindparam("name"), V.number == sa.bindparam("number")
    )


@functools.cache
def latest() -> sa.Select[Any]:
    import sqlalchemy as sa

    from conveyor.registry.tables import ModelVersionRecord as V

    return (
        select_versions().where(V.model == sa.bindparam("name")).order_by(V.number.desc()).limit(1)
    )


@functools.cache
def by_id() -> sa.Select[Any]:
    import sqlalchemy as sa

    from conveyor.registry.tables import ModelVersionRecord as V

    return select_versions().where(V.id == sa.bindparam("id"))


class Reads:
    """Read-only statements against the store's database, one short transaction each."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._base: Engine | None = None
        self._engine: Engine | None = None

    def _reader(self) -> Engine:
        engine = self.store.engine  # ClosedError once the store is closed
        if engine is not self._base:
            from conveyor.store.engine import READ

            sqlite = engine.dialect.name == "sqlite"
            # PostgreSQL: one statement, so autocommit spares the BEGIN and ROLLBACK round trips.
            self._engine = (
                engine.execution_options(**READ)
                if sqlite
                else engine.execution_options(isolation_level="AUTOCOMMIT")
            )
            self._base = engine
        assert self._engine is not None
        return self._engine

    def first(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> Any:
        """The first row of ``stmt`` (None when there is none)."""
        return self._run(stmt, params, first=True)

    def all(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> list[Any]:
        rows: list[Any] = self._run(stmt, params, first=False)
        return rows

    def _run(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None, *, first: bool) -> Any:
        from conveyor.store.database import SEAM
        from conveyor.store.engine import translate_errors

        engine = self._reader()
        with translate_errors(self.store.url, SEAM), engine.connect() as conn:
            result = conn.execute(stmt, dict(params or {}))
            found = result.first() if first else result.all()
            conn.rollback()
            return found
