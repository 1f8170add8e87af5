"""Any database SQLAlchemy can reach: a table or a query, read in chunks into Arrow.

Column types come from the table's reflected SQL types (a ``NUMERIC(12, 2)``
stays ``decimal128(12, 2)``, a ``timestamptz`` stays a UTC timestamp) and,
for a query, from the values, unified across chunks. The watermark filter is
always a bound parameter: ``WHERE ts > :conveyor_after``.

Which databases it reads is a table of URL schemes like every seam's
(:data:`SQL_SOURCES`, a :class:`conveyor.backends.Seam`): each scheme names
the driver a URL without ``+driver`` gets, the modules it needs and the extra
that installs them. An unknown scheme raises UnknownBackendError listing the
known ones when the source is built; a known one whose driver is not
installed raises MissingDependencyError naming the extra when it is read.
Another SQLAlchemy dialect plugs in with ``SQL_SOURCES.register("mssql",
"conveyor.data.sources.sql:SQLSource", requires=("pyodbc",), driver="pyodbc")``.

A database that does not answer raises BackendUnavailableError naming host
and port; a missing table or column raises NotFoundError naming it. The
password never appears in a description or an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from conveyor.backends import BackendSpec, BackendURL, Seam, unavailable
from conveyor.data.sources.base import BaseSource, Extract
from conveyor.data.sources.redaction import redact_url, scrub
from conveyor.errors import (
    BackendUnavailableError,
    InvalidInputError,
    NotFoundError,
    UnknownBackendError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, Engine

__all__ = ["SQL_SOURCES", "SQLSource"]

SEAM = "data source"
_TARGET = "conveyor.data.sources.sql:SQLSource"
_MYSQL = BackendSpec(_TARGET, "mysql", ("pymysql",), driver="pymysql")

#: The databases a SQL source reads, by URL scheme. The drivers are Conveyor's own
#: (psycopg 3, PyMySQL), not SQLAlchemy's defaults (psycopg2, mysqlclient).
SQL_SOURCES = Seam(
    SEAM,
    "databases a SQL data source reads (any SQLAlchemy dialect registered here)",
    {
        "sqlite": BackendSpec(_TARGET),
        "postgresql": BackendSpec(_TARGET, "postgres", ("psycopg",), driver="psycopg"),
        "mysql": _MYSQL,
        "mariadb": _MYSQL,
    },
)
_AFTER = "conveyor_after"
_CONNECT_TIMEOUT = 10
# DBAPIs that take connect_timeout (seconds) among their connect arguments.
_TIMEOUT_ARG = ("postgresql", "mysql", "mariadb")
# SQLSTATEs (PostgreSQL), error numbers (MySQL/MariaDB) and SQLite messages of
# a table or column that does not exist.
_MISSING_SQLSTATES = {"42P01", "42703", "3F000"}
_MISSING_ERRNOS = {1146, 1054, 1049}
_MISSING_MESSAGES = ("no such table", "no such column")
_LOST_CONNECTION = (
    "server closed the connection",
    "lost connection",
    "connection reset",
    "terminating connection",
    "gone away",
)


class SQLSource(BaseSource):
    """A table or a query in any SQLAlchemy-reachable database.

    Give exactly one of ``table`` (``"events"`` or ``"schema.events"``) and
    ``query``. Rows are streamed with a server-side cursor in chunks of
    ``chunk_size`` and converted to Arrow chunk by chunk.
    """

    kind = "sql"

    def __init__(
        self,
        url: str,
        *,
        table: str | None = None,
        query: str | None = None,
        watermark_column: str | None = None,
        chunk_size: int = 100_000,
        name: str | None = None,
    ) -> None:
        self.url = BackendURL.parse(url)
        try:
            SQL_SOURCES.spec(self.url)  # an unknown scheme is a mistake to report now
        except UnknownBackendError as exc:
            exc.context.setdefault("field", "url")
            raise
        if (table is None) == (query is None):
            raise InvalidInputError(
                f"SQL source {self._safe_url}: give exactly one of table and query",
                field="table",
            )
        if query is not None and not query.strip().rstrip(";").strip():
            raise InvalidInputError(
                f"SQL source {self._safe_url}: the query is empty", field="query"
            )
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise InvalidInputError(
                f"SQL source {self._safe_url}: chunk_size must be a positive integer, "
                f"got {chunk_size!r}",
                field="chunk_size",
            )
        self.table = table
        self.query = query.strip().rstrip(";").strip() if query is not None else None
        self.watermark_column = watermark_column
        self.chunk_size = chunk_size
        if name is None:
            name = table or "query_" + hashlib.sha256(str(query).encode()).hexdigest()[:10]
        self.name = name

    @classmethod
    def from_url(cls, url: BackendURL | str, **options: Any) -> SQLSource:
        """What :meth:`Seam.open` calls: ``SQL_SOURCES.open(url, table="tx")``."""
        return cls(
            url.render(hide_password=False) if isinstance(url, BackendURL) else url, **options
        )

    @property
    def _safe_url(self) -> str:
        return redact_url(self.url.render(hide_password=True))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "url": self._safe_url,
            "table": self.table,
            "query": self.query,
            "watermark_column": self.watermark_column,
            "chunk_size": self.chunk_size,
        }

    def _where(self) -> str:
        what = f"table {self.table!r}" if self.table else "query"
        return f"SQL {what} at {self._safe_url}"

    # -- reading ------------------------------------------------------------

    def read(self, *, after: Any | None = None) -> Extract:
        from conveyor.data.sources.tables import concat_unified

        self._check_after(after)
        shape: list[Any] = []
        chunks = list(self._stream(after, shape))
        names, known = shape
        table = (
            concat_unified(chunks, what="chunk", where=self._where())
            if chunks
            else _empty(names, known)
        )
        return self._extract(_utc(table), after=after, filtered=True)

    def create_engine(self) -> Engine:
        """An engine for this source's database (its driver, connect timeout and errors),
        for a caller that writes there too (batch scoring's table output)."""
        return self._engine()

    def iter_chunks(self) -> Iterator[pa.Table]:
        """The rows as Arrow tables of up to ``chunk_size`` rows each, streamed with a
        server-side cursor, so a caller holds one chunk at a time (batch scoring)."""
        for chunk in self._stream(None, []):
            yield _utc(chunk)

    def _stream(self, after: Any | None, shape: list[Any]) -> Iterator[pa.Table]:
        """The query's rows in chunks of ``chunk_size``, over one connection and a
        server-side cursor, errors translated; ``shape`` receives ``[names, known types]``
        once the result's columns are known (for an empty result's table)."""
        import sqlalchemy as sa

        engine = self._engine()
        try:
            try:
                conn = engine.connect()
            except sa.exc.DBAPIError as exc:
                raise self._unavailable(exc) from None
            with conn:
                try:
                    statement, known = self._statement(conn, after)
                    streaming = conn.execution_options(
                        stream_results=True, yield_per=self.chunk_size
                    )
                    result = streaming.execute(statement)
                    try:
                        names = list(result.keys())
                        _check_unique(names, self._where())
                        shape[:] = [names, known]
                        for rows in result.partitions(self.chunk_size):
                            yield _chunk_table(names, rows, known)
                    finally:
                        # A server-side cursor left open would outlive the read.
                        result.close()
                except sa.exc.DBAPIError as exc:
                    if exc.connection_invalidated or _lost(exc):
                        raise self._unavailable(exc) from None
                    raise self._query_error(exc) from None
        finally:
            engine.dispose()

    def _statement(
        self, conn: Connection, after: Any | None
    ) -> tuple[sa.Select[Any], dict[str, pa.DataType]]:
        import sqlalchemy as sa

        column = self.watermark_column
        if self.table is not None:
            reflected = self._reflect(conn)
            dialect = conn.dialect.name
            known = {c.name: t for c in reflected.columns if (t := _arrow_type_of(c.type, dialect))}
            statement = sa.select(reflected)
            if column is not None:
                if column not in reflected.c:
                    raise NotFoundError(
                        f"{self._where()} has no column {column!r} (the watermark column); "
                        f"its columns are: {', '.join(reflected.c.keys())}",
                        column=column,
                        table=self.table,
                    )
                if after is not None:
                    target = reflected.c[column]
                    statement = statement.where(
                        target > sa.bindparam(_AFTER, _bindable(after, target.type), target.type)
                    )
            return statement, known
        assert self.query is not None
        # text() reads ":name" as a bind parameter; the user's query has none
        # ('12:30', ::int casts), so every colon is literal.
        inner = sa.text(f"({self.query.replace(':', chr(92) + ':')}) AS conveyor_source")
        statement = sa.select(sa.literal_column("*")).select_from(inner)
        if column is not None and after is not None:
            statement = statement.where(sa.column(column) > sa.bindparam(_AFTER, after))
        return statement, {}

    def _reflect(self, conn: Connection) -> sa.Table:
        import sqlalchemy as sa

        assert self.table is not None
        schema, _, name = self.table.rpartition(".")
        try:
            return sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=conn)
        except sa.exc.NoSuchTableError:
            raise NotFoundError(
                f"there is no table {self.table!r} in the database at {self._safe_url}",
                table=self.table,
            ) from None

    # -- connections and errors ---------------------------------------------

    def _engine(self) -> Engine:
        import sqlalchemy as sa

        url = self.url
        spec = SQL_SOURCES.spec(url)
        if url.driver is None or url.driver == spec.driver:
            # The scheme's own driver: MissingDependencyError naming the extra if it is absent.
            SQL_SOURCES.resolve(url)
            url = url.with_(driver=spec.driver)
        connect_args: dict[str, Any] = {}
        if url.scheme in _TIMEOUT_ARG and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = _CONNECT_TIMEOUT
        try:
            return sa.create_engine(
                sa.engine.make_url(url.render(hide_password=False)),
                poolclass=sa.pool.NullPool,
                connect_args=connect_args,
            )
        except ImportError as exc:
            # A driver the URL names (postgresql+psycopg2://): not what the extra installs.
            other = replace(spec, extra=None)
            subject = f"the {SEAM} backend for {url.scheme}+{url.driver}://"
            raise other.missing_error(
                subject, exc.name or str(exc), seam=SEAM, scheme=url.scheme
            ) from None
        except sa.exc.ArgumentError as exc:
            raise InvalidInputError(
                f"{self._safe_url} is not a database URL SQLAlchemy understands: "
                f"{scrub(str(exc), self.url.password)}",
                field="url",
            ) from None

    def _reason(self, exc: sa.exc.DBAPIError) -> str:
        text = str(exc.orig if exc.orig is not None else exc).strip()
        first = text.splitlines()[0] if text else type(exc.orig).__name__
        return scrub(first, self.url.password)

    def _unavailable(self, exc: sa.exc.DBAPIError) -> BackendUnavailableError:
        return unavailable(BackendURL.parse(self._safe_url), SEAM, self._reason(exc))

    def _query_error(self, exc: sa.exc.DBAPIError) -> InvalidInputError | NotFoundError:
        reason = self._reason(exc)
        if _is_missing(exc):
            return NotFoundError(f"{self._where()}: {reason}", table=self.table, url=self._safe_url)
        return InvalidInputError(
            f"{self._where()} failed: {reason}", table=self.table, url=self._safe_url
        )


def _is_missing(exc: Any) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _MISSING_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MISSING_ERRNOS:
        return True
    return any(marker in str(orig).lower() for marker in _MISSING_MESSAGES)


def _lost(exc: Any) -> bool:
    text = str(exc.orig).lower()
    return any(marker in text for marker in _LOST_CONNECTION)


def _check_unique(names: list[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidInputError(
                f"{where} returns two columns named {name!r}; give one an alias (AS ...)",
                column=name,
            )
        seen.add(name)


def _bindable(after: Any, sql_type: Any) -> Any:
    """An ISO string watermark as the date/datetime a date or timestamp column binds."""
    import sqlalchemy as sa

    if isinstance(after, str):
        try:
            if isinstance(sql_type, sa.DateTime):
                return datetime.fromisoformat(after)
            if isinstance(sql_type, sa.Date):
                return date.fromisoformat(after)
        except ValueError:
            pass
    return after


def _arrow_type_of(sql_type: Any, dialect: str) -> pa.DataType | None:
    """The Arrow type a reflected SQL type maps to, or None to infer from the values."""
    import pyarrow as pa
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    if isinstance(sql_type, sa.Boolean):
        return pa.bool_()
    if isinstance(sql_type, mysql.TINYINT) and sql_type.display_width == 1:
        return pa.bool_()  # MySQL's BOOLEAN is TINYINT(1)
    if isinstance(sql_type, sa.Integer):
        unsigned = bool(getattr(sql_type, "unsigned", False))
        if dialect == "sqlite":
            bits = 64  # every SQLite integer is 64-bit, whatever the declared type
        elif isinstance(sql_type, sa.BigInteger):
            bits = 64
        elif isinstance(sql_type, mysql.TINYINT):
            bits = 8
        elif isinstance(sql_type, sa.SmallInteger):
            bits = 16
        else:
            bits = 32  # INTEGER, MySQL's MEDIUMINT
        return pa.from_numpy_dtype(f"{'u' if unsigned else ''}int{bits}")
    if isinstance(sql_type, sa.Float):
        return pa.float64()
    if isinstance(sql_type, sa.Numeric):
        precision, scale = sql_type.precision, sql_type.scale
        if not sql_type.asdecimal:
            return pa.float64()
        if precision is None:
            return None
        if precision > 38:
            return pa.decimal256(precision, scale or 0)
        return pa.decimal128(precision, scale or 0)
    if isinstance(sql_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if sql_type.timezone else None)
    if isinstance(sql_type, sa.Date):
        return pa.date32()
    if isinstance(sql_type, sa.Time):
        return pa.time64("us")
    if isinstance(sql_type, sa.Interval):
        return pa.duration("us")
    if isinstance(sql_type, sa.String):
        return pa.string()
    if isinstance(sql_type, sa.LargeBinary):
        return pa.binary()
    return None


def _chunk_table(names: list[str], rows: Any, known: dict[str, pa.DataType]) -> pa.Table:
    import pyarrow as pa

    # The driver hands over tuples; transposing them in C is the one pass over rows.
    columns = list(zip(*rows, strict=True))
    arrays = [_column(values, known.get(name)) for name, values in zip(names, columns, strict=True)]
    return pa.Table.from_arrays(arrays, names=names)


def _column(values: tuple[Any, ...], kind: pa.DataType | None) -> pa.Array:
    import pyarrow as pa

    failures = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)
    if kind is not None:
        try:
            return pa.array(values, type=kind)
        except failures:
            try:
                # TINYINT(1) as bool, a float column that came back as Decimal...
                return pa.array(values).cast(kind)
            except failures:
                pass
    try:
        return pa.array(values)
    except failures:
        # Driver objects Arrow has no type for (UUID, IP addresses, ranges): their text.
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _utc(table: pa.Table) -> pa.Table:
    """Aware timestamps in UTC (the session's zone, "Etc/UTC" or "Europe/Paris", is noise)."""
    import pyarrow as pa

    for index, fld in enumerate(table.schema):
        if pa.types.is_timestamp(fld.type) and fld.type.tz not in (None, "UTC"):
            target = pa.timestamp(fld.type.unit, tz="UTC")
            table = table.set_column(index, fld.name, table[fld.name].cast(target))
    return table


def _empty(names: list[str], known: dict[str, pa.DataType]) -> pa.Table:
    import pyarrow as pa

    return pa.table({name: pa.array([], type=known.get(name, pa.null())) for name in names})
