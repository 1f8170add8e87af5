"""CSV and Parquet sources on real files, good and bad."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conveyor.data.sources import CSVSource, Extract, ParquetSource, Source
from conveyor.errors import InvalidInputError, NotFoundError

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def _csv(path: Path, rows: range) -> Path:
    lines = ["id,ts,amount,country"]
    lines += [
        f"{i},{(T0 + timedelta(hours=i)).isoformat().replace('+00:00', 'Z')},{i * 1.5},c{i % 3}"
        for i in rows
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- CSV -------------------------------------------------------------------


def test_csv_reads_typed_columns_and_describes_itself(tmp_path: Path) -> None:
    source = CSVSource(_csv(tmp_path / "tx.csv", range(1, 6)), watermark_column="ts")
    assert isinstance(source, Source)
    extract = source.read()
    assert isinstance(extract, Extract)
    table = extract.table
    assert table.column_names == ["id", "ts", "amount", "country"]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("ts").type.tz == "UTC"
    assert table["amount"].to_pylist() == [1.5, 3.0, 4.5, 6.0, 7.5]
    assert extract.watermark == T0 + timedelta(hours=5)
    assert extract.source["kind"] == "csv"
    assert extract.source["path"] == str(tmp_path / "tx.csv")
    assert extract.source["rows"] == 5
    assert extract.source["watermark"] == {
        "column": "ts",
        "after": None,
        "through": (T0 + timedelta(hours=5)).isoformat(),
    }
    assert source.name == "tx"


def test_csv_after_returns_only_newer_rows(tmp_path: Path) -> None:
    source = CSVSource(_csv(tmp_path / "tx.csv", range(1, 6)), watermark_column="ts")
    newer = source.read(after=T0 + timedelta(hours=3))
    assert newer.table["id"].to_pylist() == [4, 5]
    # Strictly greater: the row at the watermark is not read again.
    assert source.read(after=T0 + timedelta(hours=5)).rows == 0
    assert source.read(after=T0 + timedelta(hours=5)).watermark is None
    # An ISO string works as the watermark of a timestamp column too.
    assert source.read(after="2024-05-01T03:30:00+00:00").table["id"].to_pylist() == [4, 5]


def test_csv_sub_second_watermark_is_not_rounded(tmp_path: Path) -> None:
    # pyarrow infers timestamp[s] for whole seconds; the watermark keeps its microseconds.
    source = CSVSource(_csv(tmp_path / "tx.csv", range(1, 4)), watermark_column="ts")
    just_after_2 = T0 + timedelta(hours=2, microseconds=1)
    assert source.read(after=just_after_2).table["id"].to_pylist() == [3]
    just_before_2 = T0 + timedelta(hours=2, microseconds=-1)
    assert source.read(after=just_before_2).table["id"].to_pylist() == [2, 3]


def test_csv_column_types_delimiter_and_frames(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("id;price;day\n1;10.25;2024-05-01\n2;3.10;2024-05-02\n", encoding="utf-8")
    source = CSVSource(
        path,
        delimiter=";",
        column_types={"price": "decimal128(10, 2)", "id": "int32", "day": "date32"},
        watermark_column="day",
    )
    extract = source.read()
    assert extract.table.schema.field("price").type == pa.decimal128(10, 2)
    assert extract.table["price"].to_pylist() == [Decimal("10.25"), Decimal("3.10")]
    assert extract.table.schema.field("id").type == pa.int32()
    assert source.read(after="2024-05-01").table["id"].to_pylist() == [2]
    frame = source.read_frame("pandas")
    assert isinstance(frame, pd.DataFrame)
    assert frame["id"].tolist() == [1, 2]
    polars_frame = source.read_frame("polars", after="2024-05-01")
    assert isinstance(polars_frame, pl.DataFrame)
    assert polars_frame["id"].to_list() == [2]
    assert isinstance(extract.frame("polars"), pl.DataFrame)


def test_csv_in_the_wrong_encoding_names_file_offset_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    text = "id,name\n1,Ana\n2,Zoë\n3,José\n"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(InvalidInputError) as info:
        CSVSource(path).read()
    offset = text.encode("latin-1").index("ë".encode("latin-1"))
    message = str(info.value)
    assert str(path) in message
    assert f"offset {offset}" in message
    assert "line 3" in message
    assert "0xeb" in message
    assert info.value.context["line"] == 3
    assert info.value.context["offset"] == offset
    # Declaring the right encoding reads it.
    names = CSVSource(path, encoding="latin-1").read().table["name"].to_pylist()
    assert names == ["Ana", "Zoë", "José"]


def test_encoding_error_past_the_first_megabyte_counts_lines_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    head = ("id,name\n" + "".join(f"{i},abcdefghij\n" for i in range(80_000))).encode()
    # Pad so the two bytes of the first "é" straddle a boundary of the scanner's 1 MiB chunks.
    boundary = 2 * 2**20
    head += b"0," + b"p" * (boundary - 1 - 2 - len(head) - 3) + b"\n"
    row = b"x," + "é".encode() * 3 + b"\xff\n"
    assert len(head) + 2 == boundary - 1
    path.write_bytes(head + row + b"y,tail\n")
    with pytest.raises(InvalidInputError) as info:
        CSVSource(path, encoding="ascii").read()
    assert info.value.context["offset"] == len(head) + 2  # é is not ASCII
    assert info.value.context["line"] == head.count(b"\n") + 1
    with pytest.raises(InvalidInputError) as info:
        CSVSource(path).read()
    assert info.value.context["offset"] == len(head) + 8  # the 0xff after three é
    assert info.value.context["line"] == head.count(b"\n") + 1


def test_csv_missing_file_and_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"nope\.csv"):
        CSVSource(tmp_path / "nope.csv").read()
    path = _csv(tmp_path / "tx.csv", range(1, 3))
    with pytest.raises(NotFoundError, match="'country_code'") as info:
        CSVSource(path, column_types={"country_code": "string"}).read()
    assert info.value.context["column"] == "country_code"
    with pytest.raises(NotFoundError, match="'updated_at'"):
        CSVSource(path, watermark_column="updated_at").read()
    with pytest.raises(InvalidInputError, match=r"'amount'.*unknown type"):
        CSVSource(path, column_types={"amount": "money"})
    with pytest.raises(InvalidInputError, match="encoding"):
        CSVSource(path, encoding="klingon")
    with pytest.raises(InvalidInputError, match="is not a file"):
        CSVSource(tmp_path).read()


def test_csv_bad_values_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,amount\n1,2.5\n2,lots\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"bad\.csv") as info:
        CSVSource(path, column_types={"amount": "float64"}).read()
    assert "lots" in str(info.value)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4,5\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"ragged\.csv"):
        CSVSource(ragged).read()


def test_after_without_a_watermark_column_is_refused(tmp_path: Path) -> None:
    source = CSVSource(_csv(tmp_path / "tx.csv", range(1, 3)))
    with pytest.raises(InvalidInputError, match="watermark_column"):
        source.read(after=1)
    assert source.read().watermark is None
    assert "watermark" not in source.read().source


def test_a_watermark_of_the_wrong_type_names_the_column(tmp_path: Path) -> None:
    source = CSVSource(_csv(tmp_path / "tx.csv", range(1, 3)), watermark_column="ts")
    with pytest.raises(InvalidInputError, match="'ts'"):
        source.read(after=5)
    with pytest.raises(InvalidInputError, match="time zone"):
        source.read(after=datetime(2024, 5, 1))  # naive against an aware column


# -- Parquet ---------------------------------------------------------------


def _parquet(path: Path, ids: range, **extra: list[object]) -> Path:
    table = pa.table(
        {
            "id": pa.array(list(ids), pa.int64()),
            "ts": pa.array([T0 + timedelta(minutes=i) for i in ids], pa.timestamp("us", tz="UTC")),
            "value": pa.array([float(i) / 4 for i in ids]),
            **{k: pa.array(v) for k, v in extra.items()},
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=10)
    return path


def test_parquet_file_with_columns_and_pushed_down_watermark(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "events.parquet", range(1, 101))
    source = ParquetSource(path, columns=["value"], watermark_column="id")
    extract = source.read(after=95)
    # The watermark column is read to compute the new watermark, and not returned.
    assert extract.table.column_names == ["value"]
    assert extract.table["value"].to_pylist() == [i / 4 for i in range(96, 101)]
    assert extract.watermark == 100
    assert extract.source["watermark"]["after"] == 95
    by_ts = ParquetSource(path, watermark_column="ts")
    newer = by_ts.read(after=T0 + timedelta(minutes=98, seconds=30))
    assert newer.table["id"].to_pylist() == [99, 100]
    assert newer.watermark == T0 + timedelta(minutes=100)
    assert by_ts.read_frame("polars", after=T0 + timedelta(minutes=99))["id"].to_list() == [100]


def test_parquet_directory_of_files_with_an_added_column(tmp_path: Path) -> None:
    folder = tmp_path / "lake"
    _parquet(folder / "part-0.parquet", range(1, 4))
    _parquet(folder / "2024" / "part-1.parquet", range(4, 6), country=["PT", "FR"])
    (folder / "_SUCCESS").write_text("")  # hidden/marker files are skipped
    (folder / ".part-0.parquet.crc").write_bytes(b"\x00")
    source = ParquetSource(folder, watermark_column="id")
    assert [p.name for p in source.files()] == ["part-1.parquet", "part-0.parquet"]
    table = source.read().table.sort_by("id")
    assert table["id"].to_pylist() == [1, 2, 3, 4, 5]
    assert table["country"].to_pylist() == [None, None, None, "PT", "FR"]
    assert source.read(after=3).table.sort_by("id")["country"].to_pylist() == ["PT", "FR"]
    assert source.read().source["files"] == 2


def test_corrupt_parquet_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "lake"
    _parquet(folder / "a.parquet", range(1, 4))
    good = _parquet(tmp_path / "b.parquet", range(4, 8))
    data = good.read_bytes()
    (folder / "b.parquet").write_bytes(data[: len(data) // 2])  # truncated: no footer
    with pytest.raises(InvalidInputError) as info:
        ParquetSource(folder).read()
    assert str(folder / "b.parquet") in str(info.value)
    assert info.value.context["file"] == str(folder / "b.parquet")
    # Damaged data pages behind an intact footer are found and named too.
    damaged = bytearray(data)
    damaged[4:200] = bytes(196)
    (folder / "b.parquet").write_bytes(bytes(damaged))
    with pytest.raises(InvalidInputError, match=r"b\.parquet"):
        ParquetSource(folder).read()
    text = tmp_path / "notes.parquet"
    text.write_text("id,ts\n1,2\n")
    with pytest.raises(InvalidInputError, match=r"notes\.parquet"):
        ParquetSource(text).read()


def test_parquet_missing_paths_and_columns(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nowhere"):
        ParquetSource(tmp_path / "nowhere").read()
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="no data files"):
        ParquetSource(tmp_path / "empty").read()
    path = _parquet(tmp_path / "e.parquet", range(1, 3))
    with pytest.raises(NotFoundError, match="'amount'"):
        ParquetSource(path, columns=["id", "amount"]).read()
    with pytest.raises(NotFoundError, match="'updated'"):
        ParquetSource(path, watermark_column="updated").read()


def test_parquet_files_whose_types_conflict_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "lake"
    folder.mkdir()
    pq.write_table(pa.table({"id": [1, 2]}), folder / "a.parquet")
    pq.write_table(pa.table({"id": ["x", "y"]}), folder / "b.parquet")
    with pytest.raises(
        InvalidInputError,
        match=r"'id' is int64 in file .*a\.parquet but string in file .*b\.parquet",
    ):
        ParquetSource(folder).read()
