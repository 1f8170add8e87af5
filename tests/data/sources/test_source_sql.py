"""The SQL source against the real PostgreSQL and MariaDB (and a SQLite file)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy as sa

from conveyor.data.sources import SQLSource, source_from_spec
from conveyor.data.sources.sql import SQL_SOURCES
from conveyor.errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidInputError,
    MissingDependencyError,
    NotFoundError,
    UnknownBackendError,
)

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def _engine(url: str) -> sa.Engine:
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _execute(url: str, *statements: str, **params: object) -> None:
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


@pytest.fixture
def pg_tx(pg_url: str) -> str:
    _execute(
        pg_url,
        "CREATE TABLE tx (id bigint PRIMARY KEY, amount numeric(12, 2), score double precision,"
        " name text, active boolean, ts timestamptz, day date, small smallint, code text)",
        "INSERT INTO tx SELECT i, i * 1.25, i / 4.0, 'n' || i, i % 2 = 0,"
        " timestamptz '2024-05-01 00:00+00' + i * interval '1 hour', date '2024-05-01' + i,"
        " i, chr(96 + i) FROM generate_series(1, 10) AS i",
    )
    return pg_url


def test_postgres_table_types_are_preserved(pg_tx: str) -> None:
    extract = SQLSource(pg_tx, table="tx", watermark_column="ts", chunk_size=3).read()
    schema = extract.table.schema
    assert schema.field("id").type == pa.int64()
    assert schema.field("amount").type == pa.decimal128(12, 2)
    assert schema.field("score").type == pa.float64()
    assert schema.field("name").type == pa.string()
    assert schema.field("active").type == pa.bool_()
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert schema.field("day").type == pa.date32()
    assert schema.field("small").type == pa.int16()
    table = extract.table.sort_by("id")
    assert table["id"].to_pylist() == list(range(1, 11))
    assert table["amount"].to_pylist()[:2] == [Decimal("1.25"), Decimal("2.50")]
    assert table["active"].to_pylist()[:2] == [False, True]
    assert table["ts"].to_pylist()[0] == T0 + timedelta(hours=1)
    assert table["day"].to_pylist()[0] == date(2024, 5, 2)
    assert extract.watermark == T0 + timedelta(hours=10)
    assert extract.source["rows"] == 10
    assert extract.source["table"] == "tx"


def test_postgres_watermark_filter_and_frames(pg_tx: str) -> None:
    source = SQLSource(pg_tx, table="tx", watermark_column="ts", chunk_size=4)
    newer = source.read(after=T0 + timedelta(hours=7, minutes=30))
    assert sorted(newer.table["id"].to_pylist()) == [8, 9, 10]
    assert source.read(after=T0 + timedelta(hours=10)).rows == 0
    empty = source.read(after=T0 + timedelta(hours=10))
    assert empty.watermark is None
    assert empty.table.schema.field("amount").type == pa.decimal128(12, 2)  # typed when empty
    frame = source.read_frame("polars", after=T0 + timedelta(hours=9))
    assert isinstance(frame, pl.DataFrame)
    assert frame["id"].to_list() == [10]
    assert source.read_frame("pandas", after=T0 + timedelta(hours=9))["id"].tolist() == [10]


def test_the_watermark_is_a_bound_parameter_not_sql_text(pg_tx: str) -> None:
    source = SQLSource(pg_tx, table="tx", watermark_column="code")
    hostile = "h' OR '1'='1"
    rows = sorted(source.read(after=hostile).table["code"].to_pylist())
    # Compared as a string: only codes after "h' OR ..." (i and j), not every row.
    assert rows == ["i", "j"]
    query = SQLSource(pg_tx, query="SELECT id, code FROM tx", watermark_column="code")
    assert sorted(query.read(after=hostile).table["code"].to_pylist()) == ["i", "j"]


def test_postgres_query_in_chunks_with_colons_and_casts(pg_tx: str) -> None:
    source = SQLSource(
        pg_tx,
        query="SELECT id, amount, ts, '12:30' AS at, id::text AS label FROM tx WHERE id > 2;",
        watermark_column="id",
        chunk_size=3,
    )
    extract = source.read(after=5)
    table = extract.table.sort_by("id")
    assert table["id"].to_pylist() == [6, 7, 8, 9, 10]
    assert table["at"].to_pylist() == ["12:30"] * 5
    assert table["label"].to_pylist() == ["6", "7", "8", "9", "10"]
    assert table.schema.field("ts").type.tz == "UTC"
    assert pa.types.is_decimal(table.schema.field("amount").type)
    assert table["amount"].to_pylist()[0] == Decimal("7.50")
    assert extract.watermark == 10
    assert source.name.startswith("query_")


def test_postgres_missing_table_and_columns_are_named(pg_tx: str) -> None:
    with pytest.raises(NotFoundError, match="'payments'"):
        SQLSource(pg_tx, table="payments").read()
    with pytest.raises(NotFoundError, match="'updated_at'") as info:
        SQLSource(pg_tx, table="tx", watermark_column="updated_at").read()
    assert info.value.context["column"] == "updated_at"
    with pytest.raises(NotFoundError, match="colour"):
        SQLSource(pg_tx, query="SELECT colour FROM tx").read()
    with pytest.raises(NotFoundError, match="updated_at"):
        SQLSource(pg_tx, query="SELECT id FROM tx", watermark_column="updated_at").read(after=1)
    with pytest.raises(InvalidInputError, match="syntax"):
        SQLSource(pg_tx, query="SELEKT 1").read()
    with pytest.raises(InvalidInputError, match="two columns named 'id'"):
        SQLSource(pg_tx, query="SELECT id, id FROM tx").read()


def test_unreachable_database_names_host_and_port_but_never_the_password() -> None:
    for url in (
        "postgresql://app:hunter2-secret@127.0.0.1:1/test",
        "mysql+pymysql://app:hunter2-secret@127.0.0.1:2/test",
    ):
        source = SQLSource(url, table="tx")
        with pytest.raises(BackendUnavailableError) as info:
            source.read()
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert f"127.0.0.1:{port}" in str(info.value)
        for shown in (str(info.value), str(info.value.to_dict()), str(source.describe())):
            assert "hunter2" not in shown
        assert "hunter2" not in repr(source)


def test_exactly_one_of_table_and_query() -> None:
    with pytest.raises(InvalidInputError, match="exactly one"):
        SQLSource("postgresql://127.0.0.1/test")
    with pytest.raises(InvalidInputError, match="exactly one"):
        SQLSource("postgresql://127.0.0.1/test", table="a", query="SELECT 1")
    with pytest.raises(InvalidInputError, match="chunk_size"):
        SQLSource("postgresql://127.0.0.1/test", table="a", chunk_size=0)


# -- MariaDB ---------------------------------------------------------------


def test_mariadb_table_and_query(mariadb_table: tuple[str, str]) -> None:
    url, name = mariadb_table
    _execute(
        url,
        f"CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, amount DECIMAL(12, 2), score DOUBLE,"
        " label VARCHAR(20), active BOOLEAN, ts DATETIME(6), day DATE, small TINYINT,"
        " big INT UNSIGNED)",
        f"INSERT INTO `{name}` VALUES"
        " (1, 1.25, 0.5, 'a', TRUE, '2024-05-01 01:00:00.123456', '2024-05-02', 3, 4000000000),"
        " (2, 2.50, 1.5, 'b', FALSE, '2024-05-01 02:00:00', '2024-05-03', -3, 1),"
        " (3, NULL, NULL, NULL, NULL, '2024-05-01 03:00:00', NULL, NULL, NULL)",
    )
    source = SQLSource(url, table=name, watermark_column="ts", chunk_size=2)
    extract = source.read()
    schema = extract.table.schema
    assert schema.field("amount").type == pa.decimal128(12, 2)
    assert schema.field("active").type == pa.bool_()  # BOOLEAN is TINYINT(1) in MariaDB
    assert schema.field("ts").type == pa.timestamp("us")
    assert schema.field("small").type == pa.int8()
    assert schema.field("big").type == pa.uint32()
    table = extract.table.sort_by("id")
    assert table.slice(0, 1).to_pylist() == [
        {
            "id": 1,
            "amount": Decimal("1.25"),
            "score": 0.5,
            "label": "a",
            "active": True,
            "ts": datetime(2024, 5, 1, 1, 0, 0, 123456),
            "day": date(2024, 5, 2),
            "small": 3,
            "big": 4000000000,
        }
    ]
    assert table["amount"].to_pylist()[2] is None
    assert extract.watermark == datetime(2024, 5, 1, 3)
    # Microseconds survive the round trip through the bound parameter.
    after = datetime(2024, 5, 1, 1, 0, 0, 123456)
    assert sorted(source.read(after=after).table["id"].to_pylist()) == [2, 3]
    query = SQLSource(url, query=f"SELECT id, amount FROM `{name}`", watermark_column="id")
    assert query.read(after=1).table.sort_by("id").to_pylist() == [
        {"id": 2, "amount": Decimal("2.50")},
        {"id": 3, "amount": None},
    ]


def test_mariadb_missing_table_and_column(mariadb_table: tuple[str, str]) -> None:
    url, name = mariadb_table
    with pytest.raises(NotFoundError, match=name):
        SQLSource(url, table=name).read()
    _execute(url, f"CREATE TABLE `{name}` (id INT)")
    with pytest.raises(NotFoundError, match="colour"):
        SQLSource(url, query=f"SELECT colour FROM `{name}`").read()
    with pytest.raises(NotFoundError, match="'ts'"):
        SQLSource(url, table=name, watermark_column="ts").read()


def test_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    _execute(
        url,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, big INTEGER, price NUMERIC(8, 2), name TEXT)",
        "INSERT INTO t VALUES (1, 9007199254740993, 1.5, 'a'), (2, 2, 2.25, 'b')",
    )
    table = SQLSource(url, table="t", watermark_column="id").read(after=0).table.sort_by("id")
    assert table.schema.field("big").type == pa.int64()
    assert table["big"].to_pylist() == [9007199254740993, 2]
    assert table["price"].to_pylist() == [Decimal("1.50"), Decimal("2.25")]


# -- the scheme table --------------------------------------------------------


def test_schemes_resolve_through_the_seam_table_with_distinct_errors(tmp_path: Path) -> None:
    assert SQL_SOURCES.schemes() == ["mariadb", "mysql", "postgresql", "sqlite"]
    with pytest.raises(UnknownBackendError) as unknown:
        SQLSource("mssql://sa:hunter2@db/app", table="t")
    assert str(unknown.value) == (
        "no data source backend for scheme 'mssql' in mssql://sa:***@db/app; "
        "known schemes: mariadb://, mysql://, postgresql://, sqlite://"
    )
    assert unknown.value.context["field"] == "url"
    # In a spec, the error names the url field.
    with pytest.raises(ConfigError, match=r"^datasets\.tx\.source\.url: no data source backend"):
        source_from_spec(
            {"kind": "sql", "url": "mssql://db/app", "table": "t"},
            root=tmp_path,
            where="datasets.tx.source",
        )
    # A known scheme whose driver is missing: the extra to install, when it is read.
    original = SQL_SOURCES.spec("postgresql://x")
    SQL_SOURCES.register(
        "postgresql",
        original.target,
        "postgres",
        ("no_such_driver_xyz",),
        driver="psycopg",
        clobber=True,
    )
    try:
        source = SQLSource("postgresql://app:hunter2@127.0.0.1:1/test", table="tx")
        with pytest.raises(MissingDependencyError) as missing:
            source.read()
        assert str(missing.value) == (
            "the data source backend for postgresql:// needs no_such_driver_xyz, which is not "
            "installed: pip install 'conveyor[postgres]'"
        )
    finally:
        SQL_SOURCES.register(
            "postgresql",
            original.target,
            original.extra,
            original.requires,
            driver=original.driver,
            clobber=True,
        )
    # A driver the URL names itself, not installed: no extra provides it.
    with pytest.raises(MissingDependencyError, match="provides psycopg2") as other:
        SQLSource("postgresql+psycopg2://127.0.0.1:1/test", table="tx").read()
    assert other.value.context["extra"] is None


def test_the_seam_opens_a_source(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    _execute(url, "CREATE TABLE t (id INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (1), (2)")
    source = SQL_SOURCES.open(url, table="t")
    assert isinstance(source, SQLSource)
    assert source.read().table["id"].to_pylist() == [1, 2]
    with pytest.raises(InvalidInputError, match="already registered"):  # as for every seam
        SQL_SOURCES.register("sqlite", "conveyor.data.sources.sql:SQLSource")
