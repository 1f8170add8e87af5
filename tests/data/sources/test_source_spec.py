"""Sources built from spec blocks; every mistake names its field."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conveyor.data.sources import (
    CSVSource,
    HTTPJSONSource,
    ParquetSource,
    SQLSource,
    source_from_spec,
)
from conveyor.errors import ConfigError, InvalidInputError
from conveyor.testing.http import Reply, serve

WHERE = "datasets.transactions.source"


def test_csv_and_parquet_paths_are_under_the_project_root(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tx.csv").write_text("id;ts\n1;2024-05-01T00:00:00Z\n")
    source = source_from_spec(
        {
            "kind": "csv",
            "path": "data/tx.csv",
            "delimiter": ";",
            "watermark_column": "ts",
            "column_types": {"id": "int32"},
        },
        root=tmp_path,
        where=WHERE,
        name="transactions",
    )
    assert isinstance(source, CSVSource)
    assert source.path == tmp_path / "data" / "tx.csv"
    assert source.name == "transactions"
    assert source.read().table.schema.field("id").type == pa.int32()

    pq.write_table(pa.table({"id": [1, 2], "v": [0.5, 1.5]}), tmp_path / "data" / "p.parquet")
    parquet = source_from_spec(
        {"kind": "parquet", "path": "data", "columns": ["v"], "name": "own-name"},
        root=tmp_path,
    )
    assert isinstance(parquet, ParquetSource)
    assert parquet.name == "own-name"
    # The folder holds a CSV too, which is not Parquet: named as the bad file.
    with pytest.raises(InvalidInputError, match=r"tx\.csv"):
        parquet.read()


def test_sql_spec_reads_credentials_from_the_environment(pg_url: str, tmp_path: Path) -> None:
    source = source_from_spec(
        {"kind": "sql", "url": "${DB_URL}", "query": "SELECT 1 AS one", "chunk_size": 10},
        root=tmp_path,
        where=WHERE,
        env={"DB_URL": pg_url},
    )
    assert isinstance(source, SQLSource)
    assert source.read().table.to_pylist() == [{"one": 1}]
    sqlite = source_from_spec(
        {"kind": "sql", "url": "sqlite:///state/app.db", "table": "t"}, root=tmp_path
    )
    assert isinstance(sqlite, SQLSource)
    assert sqlite.url.location == str(tmp_path.resolve() / "state" / "app.db")
    with pytest.raises(ConfigError, match=rf"{WHERE}\.url: .*\$DB_URL is not set"):
        source_from_spec(
            {"kind": "sql", "url": "${DB_URL}", "table": "t"}, root=tmp_path, where=WHERE, env={}
        )


def test_http_spec_with_secret_headers(tmp_path: Path) -> None:
    with serve(
        {"/rows": lambda r: Reply.json({"items": [{"auth": r.header("authorization")}]})}
    ) as s:
        source = source_from_spec(
            {
                "kind": "http",
                "url": s.url("/rows"),
                "records": "items",
                "headers": {"Authorization": "Bearer ${API_TOKEN}"},
                "retries": 0,
            },
            root=tmp_path,
            env={"API_TOKEN": "tok-123"},
        )
        assert isinstance(source, HTTPJSONSource)
        assert source.read().table.to_pylist() == [{"auth": "Bearer tok-123"}]
        assert "tok-123" not in str(source.describe())


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({"kind": "http", "url": "http://x/", "pagination": "offset"}, "pagination", "'next_url'"),
        ({"kind": "http", "url": "http://x/", "timeout": -1}, "timeout", "greater than 0"),
        ({"kind": "http", "url": "http://x/", "retry": 2}, "retry", "unknown field"),
        ({"kind": "csv"}, "path", "Field required"),
        ({"kind": "csv", "path": "x.csv", "delimiter": ";;"}, "delimiter", "at most 1"),
        ({"kind": "sql", "url": "sqlite://"}, "", "exactly one of table and query"),
        ({"kind": "sql", "url": "sqlite://", "table": "t", "chunk_size": 0}, "chunk_size", "0"),
        ({"kind": "parquet", "path": "p", "columns": "a,b"}, "columns", "list"),
        ({"kind": "kafka", "topic": "t"}, "kind", "csv, parquet, sql, http, got 'kafka'"),
        ({"path": "x.csv"}, "kind", "missing"),
        ({"kind": "csv", "path": "x.csv", "encoding": "klingon"}, "encoding", "klingon"),
        (
            {"kind": "csv", "path": "x.csv", "column_types": {"amount": "money"}},
            "column_types.amount",
            "unknown type",
        ),
    ],
)
def test_spec_errors_name_the_field(
    tmp_path: Path, spec: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        source_from_spec(spec, root=tmp_path, where=WHERE)
    dotted = f"{WHERE}.{field}" if field else WHERE
    assert f"{dotted}: " in str(info.value)
    assert says in str(info.value)
    assert info.value.context["field"] == dotted


def test_a_spec_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=WHERE):
        source_from_spec(["csv"], root=tmp_path, where=WHERE)  # type: ignore[arg-type]
