"""Inputs (Parquet paths, pandas, polars, chunks), schema drift, rates, and the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conveyor.data.drift import DriftDetector, DriftResult
from conveyor.errors import IntegrityError, InvalidInputError, NotFoundError


def _table(seed: int, n: int = 6_000, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=shift, size=n)
    x[rng.random(n) < 0.02] = np.nan
    return pa.table(
        {
            "x": x,
            "k": rng.integers(0, 4, n),
            "c": pa.array(
                rng.choice(["a", "b", "c", "d", "e"], size=n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
            ),
            "b": pa.array(rng.random(n) < 0.5),
        }
    )


def _comparable(result: DriftResult) -> dict[str, object]:
    out = result.to_dict()
    return {k: v for k, v in out.items() if k != "columns"} | {
        name: {k: v for k, v in col.items()} for name, col in out["columns"].items()
    }


# -- inputs -------------------------------------------------------------------------


def test_parquet_paths_pandas_polars_and_arrow_give_the_same_result(tmp_path: Path) -> None:
    ref, cur = _table(1), _table(2, shift=0.1)
    # Small row groups, so the file is read in several pieces.
    pq.write_table(ref, tmp_path / "ref.parquet", row_group_size=1_000)
    pq.write_table(cur, tmp_path / "cur.parquet", row_group_size=1_000)
    expected = _comparable(DriftDetector().fit(ref).score(cur))
    from_files = DriftDetector().fit(tmp_path / "ref.parquet").score(str(tmp_path / "cur.parquet"))
    assert _comparable(from_files) == expected
    pandas = DriftDetector().fit(ref.to_pandas()).score(cur.to_pandas())
    assert _comparable(pandas) == expected
    import polars as pl

    polars = DriftDetector().fit(pl.from_arrow(ref)).score(pl.from_arrow(cur))
    assert _comparable(polars) == expected


def test_small_chunks_count_the_same_as_one_chunk(tmp_path: Path) -> None:
    ref, cur = _table(3), _table(4, shift=0.05)
    pq.write_table(cur, tmp_path / "cur.parquet", row_group_size=700)
    whole = DriftDetector(tests={"x": "psi"}).fit(ref).score(cur)
    for current in (cur, tmp_path / "cur.parquet"):
        chunked = DriftDetector(tests={"x": "psi"}, chunk_rows=333).fit(ref).score(current)
        assert _comparable(chunked) == _comparable(whole)


def test_one_thread_and_several_agree() -> None:
    ref, cur = _table(5), _table(6, shift=0.2)
    one = DriftDetector(n_jobs=1).fit(ref).score(cur)
    assert _comparable(DriftDetector(n_jobs=3).fit(ref).score(cur)) == _comparable(one)


def test_a_reference_file_changed_after_fit_is_an_integrity_error(tmp_path: Path) -> None:
    path = tmp_path / "ref.parquet"
    pq.write_table(_table(7), path)
    detector = DriftDetector().fit(path)
    pq.write_table(_table(8, n=5_000), path)
    os.utime(path, ns=(1, 1))  # a different size and modification time
    with pytest.raises(IntegrityError, match="changed since the detector was fitted"):
        detector.score(_table(9))


def test_missing_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"reference: no file at .*nowhere\.parquet"):
        DriftDetector().fit(tmp_path / "nowhere.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InvalidInputError, match=r"cannot read .*bad\.parquet as Parquet") as info:
        DriftDetector().fit(bad)
    assert info.value.context["path"] == str(bad)
    with pytest.raises(InvalidInputError, match="is not a file"):
        DriftDetector().fit(tmp_path)


# -- schema, missing and outlier rates ------------------------------------------------


def test_schema_drift_is_reported_and_fails_the_report() -> None:
    ref = _table(20)
    cur = (
        _table(21)
        .drop_columns(["k"])
        .set_column(2, "b", pa.array(["yes"] * 6_000))
        .append_column("new", pa.array(np.zeros(6_000)))
    )
    result = DriftDetector().fit(ref).score(cur)
    assert result.schema.removed == ["k"] and result.schema.added == ["new"]
    assert result.schema.type_changed == {"b": ("bool", "string")}
    assert result["k"].detail == "missing from the current data" and not result["k"].tested
    assert result["k"].missing_rate_current is None and not result["k"].missing_rate_changed
    # bool and string are both categorical: the column is still compared.
    assert result["b"].tested and result["b"].drifted
    report = result.to_report("dataset:t")
    failed = {c.name for c in report.failures}
    assert failed == {"schema.columns_removed", "schema.types_changed"}
    assert not report.passed


def test_the_same_values_in_another_arrow_layout_are_not_a_type_change() -> None:
    """pandas, Parquet and DuckDB hand back text as string or large_string: the same data."""
    words = ["a", "b", "c"] * 2_000
    ref = pa.table({"s": pa.array(words, pa.large_string()), "l": [[1.0]] * 6_000})
    cur = pa.table(
        {
            "s": pa.array(words, pa.string()),
            "l": pa.array([[1.0]] * 6_000, pa.large_list(pa.float64())),
        }
    )
    result = DriftDetector().fit(ref).score(cur)
    assert result.schema.type_changed == {}
    assert result.to_report("dataset:t").passed


def test_a_numeric_column_turned_into_text_is_not_compared() -> None:
    ref = pa.table({"x": np.arange(100.0)})
    cur = pa.table({"x": pa.array([str(v) for v in range(100)])})
    col = DriftDetector().fit(ref).score(cur)["x"]
    assert not col.tested and "type changed from double to string" in col.detail


def test_missing_and_outlier_rate_changes_are_flagged_per_column() -> None:
    rng = np.random.default_rng(12)
    n = 20_000
    ref = pa.table({"x": rng.normal(size=n), "y": rng.normal(size=n)})
    y = rng.normal(size=n)
    y[:1_000] = 25.0  # 5% far outliers
    cur = pa.table({"x": pa.array(rng.normal(size=n), mask=rng.random(n) < 0.10), "y": y})
    result = DriftDetector().fit(ref).score(cur)
    x, yy = result["x"], result["y"]
    assert x.missing_rate_changed and not x.outlier_rate_changed
    assert x.missing_rate_reference == 0.0 and x.missing_rate_current == pytest.approx(
        0.1, abs=0.01
    )
    assert yy.outlier_rate_changed and not yy.missing_rate_changed
    assert yy.outlier_rate_reference is not None and yy.outlier_rate_reference < 0.01
    assert yy.outlier_rate_current == pytest.approx(0.05, abs=0.01)
    names = {c.name for c in result.to_report("dataset:t").warnings}
    assert {"drift.missing_rate.x", "drift.outlier_rate.y"} <= names


# -- the dataset verdict and the report -------------------------------------------------


def test_dataset_drift_is_the_share_of_drifted_columns_against_drift_share() -> None:
    ref, cur = _table(13, n=20_000), _table(14, n=20_000, shift=1.0)  # only x moves
    result = DriftDetector().fit(ref).score(cur)
    assert result.drifted_columns == ["x"]
    assert result.share == pytest.approx(1 / 4) and not result.dataset_drift
    assert DriftDetector(drift_share=0.25).fit(ref).score(cur).dataset_drift


def test_report_has_the_dataset_check_schema_checks_and_one_check_per_column() -> None:
    ref, cur = _table(15), _table(16, shift=3.0)
    result = DriftDetector(drift_share=0.2).fit(ref).score(cur)
    report = result.to_report("dataset:orders")
    assert report.kind == "drift" and report.subject == "dataset:orders"
    names = [c.name for c in report.checks]
    assert names[0] == "drift.dataset"
    assert {f"drift.column.{c}" for c in ("x", "k", "c", "b")} <= set(names)
    dataset = report.checks[0]
    assert not dataset.passed and dataset.severity == "error"
    assert "drifted" in dataset.detail and "x" in dataset.detail
    column = next(c for c in report.checks if c.name == "drift.column.x")
    assert column.severity == "warning" and not column.passed
    assert report.verdict == "failed"


def test_to_dict_is_plain_json_without_nan() -> None:
    ref = pa.table({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], "c": ["a"] * 7})
    cur = pa.table({"x": [float("nan")] * 3, "c": ["a", "b", "b"]})
    result = DriftDetector().fit(ref).score(cur)
    text = json.dumps(result.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["columns"]["c"]["new_categories"] == ["b"]
    assert back["columns"]["x"]["statistic"] is None
    json.dumps(result.to_report("dataset:t").to_dict(), allow_nan=False)


def test_sorted_reference_columns_are_kept_on_disk_and_removed_with_the_detector(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(30)
    n = 100_000  # above the size worth a file
    ref = pa.table({"x": rng.normal(size=n)})
    pq.write_table(ref, tmp_path / "ref.parquet")
    current = pa.table({"x": rng.normal(size=n)})
    detector = DriftDetector().fit(tmp_path / "ref.parquet")
    stored = detector.columns_["x"].sorted_file
    assert stored is not None and Path(stored).exists()
    folder = Path(stored).parent
    with_file = detector.score(current).to_dict()
    os.remove(stored)  # gone: the column is read and sorted from the reference again
    assert detector.score(current).to_dict() == with_file
    assert DriftDetector().fit(ref).score(current).to_dict() == with_file
    detector.fit(tmp_path / "ref.parquet")  # a refit replaces the folder
    assert not folder.exists()
    folder = Path(str(detector.columns_["x"].sorted_file)).parent
    del detector
    import gc

    gc.collect()
    assert not folder.exists()
