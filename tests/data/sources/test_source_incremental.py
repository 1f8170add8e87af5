"""Incremental extraction over three rounds on every kind of source.

New rows appear between rounds; each round returns exactly the new rows; a
round whose downstream step fails (no commit) is read again in full.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from conveyor.data.sources import (
    CSVSource,
    HTTPJSONSource,
    ParquetSource,
    Source,
    SQLSource,
    WatermarkRepository,
    incremental,
)
from conveyor.errors import ConcurrentUpdateError, InvalidInputError
from conveyor.store.database import MetadataStore
from conveyor.testing.http import Reply, Request, serve

T0 = datetime(2024, 5, 1, tzinfo=UTC)

Add = Callable[[range], None]


def _ts(i: int) -> datetime:
    return T0 + timedelta(minutes=i, microseconds=i)


def _ids(extract: Any) -> list[int]:
    return sorted(extract.table["id"].to_pylist())


def _three_rounds(source: Source, add: Add, store: MetadataStore, last: Any) -> None:
    add(range(1, 4))
    extract, commit = incremental(source, store)
    assert _ids(extract) == [1, 2, 3]
    commit()

    add(range(4, 6))
    extract, _ = incremental(source, store)
    assert _ids(extract) == [4, 5]
    # The downstream step failed, so commit() was never called: the rows come again.
    extract, commit = incremental(source, store)
    assert _ids(extract) == [4, 5]
    commit()

    add(range(6, 9))
    extract, commit = incremental(source, store)
    assert _ids(extract) == [6, 7, 8]
    commit()
    commit()  # a second call changes nothing

    extract, commit = incremental(source, store)
    assert extract.rows == 0
    assert extract.watermark is None
    commit()
    assert WatermarkRepository(store).get(source.name) == last

    # Two ingests reading from the same watermark: only the first may advance it.
    add(range(9, 10))
    first, commit_first = incremental(source, store)
    second, commit_second = incremental(source, store)
    assert _ids(first) == _ids(second) == [9]
    commit_first()
    with pytest.raises(ConcurrentUpdateError):
        commit_second()


def test_csv_three_rounds(tmp_path: Path, store: MetadataStore) -> None:
    path = tmp_path / "tx.csv"
    rows: list[str] = ["id,ts,amount"]

    def add(ids: range) -> None:
        rows.extend(f"{i},{_ts(i).isoformat()},{i * 2.5}" for i in ids)
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    source = CSVSource(path, watermark_column="ts", column_types={"ts": "timestamp[us, tz=UTC]"})
    _three_rounds(source, add, store, last=_ts(8))


def test_parquet_folder_three_rounds(tmp_path: Path, store: MetadataStore) -> None:
    folder = tmp_path / "lake"
    folder.mkdir()

    def add(ids: range) -> None:
        table = pa.table({"id": list(ids), "value": [float(i) for i in ids]})
        pq.write_table(table, folder / f"batch-{ids.start:04d}.parquet")

    _three_rounds(ParquetSource(folder, watermark_column="id"), add, store, last=8)


def _sql_adder(url: str, insert: str) -> Add:
    def add(ids: range) -> None:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(insert), [{"id": i, "ts": _ts(i)} for i in ids])
        finally:
            engine.dispose()

    return add


def test_postgres_three_rounds_with_watermarks_in_postgres(
    pg_url: str, pg_store: MetadataStore
) -> None:
    driver_url = pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(driver_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE events (id bigint, ts timestamptz, note text)"))
    engine.dispose()
    add = _sql_adder(driver_url, "INSERT INTO events (id, ts, note) VALUES (:id, :ts, 'x')")
    source = SQLSource(pg_url, table="events", watermark_column="ts", chunk_size=2)
    _three_rounds(source, add, pg_store, last=_ts(8))


def test_mariadb_three_rounds(mariadb_table: tuple[str, str], store: MetadataStore) -> None:
    url, name = mariadb_table
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE `{name}` (id BIGINT PRIMARY KEY, ts DATETIME(6))"))
    engine.dispose()
    add = _sql_adder(url, f"INSERT INTO `{name}` (id, ts) VALUES (:id, :ts)")
    source = SQLSource(url, query=f"SELECT id, ts FROM `{name}`", watermark_column="id", name=name)
    _three_rounds(source, add, store, last=8)


def test_http_three_rounds_with_the_watermark_sent_to_the_server(store: MetadataStore) -> None:
    rows: list[dict[str, Any]] = []
    lock = threading.Lock()

    def handler(request: Request) -> Reply:
        since = request.arg("since")
        page = int(request.arg("page") or 1)
        with lock:
            newer = [r for r in rows if since is None or r["ts"] > since]
        return Reply.json({"data": newer[(page - 1) * 2 : page * 2]})

    def add(ids: range) -> None:
        with lock:
            rows.extend({"id": i, "ts": _ts(i).isoformat()} for i in ids)

    with serve({"/events": handler}) as server:
        source = HTTPJSONSource(
            server.url("/events"),
            pagination="page",
            column_types={"ts": "timestamp[us, tz=UTC]"},
            watermark_column="ts",
            watermark_param="since",
            name="events-api",
        )
        _three_rounds(source, add, store, last=_ts(8))
        sent = [r.arg("since") for r in server.requests if r.arg("page") == "1"]
        assert sent[0] is None
        assert _ts(3).isoformat() in sent


def test_incremental_needs_a_watermark_column(tmp_path: Path, store: MetadataStore) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id\n1\n")
    with pytest.raises(InvalidInputError, match="watermark_column"):
        incremental(CSVSource(path), store)


def test_changing_the_watermark_column_is_refused_until_reset(
    tmp_path: Path, store: MetadataStore
) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id,seq\n1,10\n2,20\n")
    _, commit = incremental(CSVSource(path, watermark_column="id", name="x"), store)
    commit()
    with pytest.raises(InvalidInputError, match=r"'id'.*'seq'"):
        incremental(CSVSource(path, watermark_column="seq", name="x"), store)
    assert WatermarkRepository(store).reset("x")
    extract, _ = incremental(CSVSource(path, watermark_column="seq", name="x"), store)
    assert extract.rows == 2
