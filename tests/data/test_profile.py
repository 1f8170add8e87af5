"""profile(): per-column facts equal numpy's and Arrow's, as plain JSON, from any input."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conveyor.data.profile import QUANTILES, profile, profile_column
from conveyor.errors import InvalidInputError, NotFoundError


def _table(n: int = 5_000) -> pa.Table:
    rng = np.random.default_rng(0)
    x = rng.normal(10, 2, n)
    x[:5] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
    return pa.table(
        {
            "x": pa.array(x, mask=np.arange(n) % 100 == 99),  # 50 nulls
            "i": pa.array(rng.integers(0, 1_000, n)),
            "s": pa.array(rng.choice(["a", "b", "c", "d"], size=n, p=[0.4, 0.3, 0.2, 0.1])),
            "d": pa.array(rng.choice(["u", "v"], size=n)).dictionary_encode(),
            "b": pa.array(rng.random(n) < 0.25, mask=np.arange(n) < 10),
            "t": pa.array((np.arange(n) * 1_000).astype("datetime64[ms]")),  # Parquet has no [s]
            "l": pa.array([[1, 2]] * n),
        }
    )


def test_numeric_facts_equal_numpy_on_the_finite_values() -> None:
    table = _table()
    facts = profile(table, bins=7)["columns"]["x"]
    raw = table.column("x").to_numpy(zero_copy_only=False)  # nulls come back as NaN
    valid = raw[~table.column("x").is_null().to_numpy(zero_copy_only=False)]
    finite = valid[np.isfinite(valid)]
    assert facts["kind"] == "numeric" and facts["type"] == "double"
    assert (facts["count"], facts["nulls"]) == (4_950, 50)
    assert facts["null_fraction"] == pytest.approx(0.01)
    assert (facts["nan"], facts["infinite"]) == (3, 2)
    assert facts["distinct"] == np.unique(finite).size
    assert (facts["min"], facts["max"]) == (finite.min(), finite.max())
    assert facts["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert facts["std"] == pytest.approx(finite.std(ddof=1), rel=1e-12)
    expected_q = np.quantile(finite, list(QUANTILES.values()))
    assert list(facts["quantiles"]) == ["p1", "p5", "p25", "p50", "p75", "p95", "p99"]
    np.testing.assert_allclose(list(facts["quantiles"].values()), expected_q, rtol=1e-12)
    counts, edges = np.histogram(finite, bins=7)
    assert facts["histogram"]["counts"] == counts.tolist()
    np.testing.assert_allclose(facts["histogram"]["edges"], edges, rtol=1e-12)
    assert sum(facts["histogram"]["counts"]) == finite.size
    assert facts["top"] is None


def test_integers_keep_exact_bounds_beyond_float_precision() -> None:
    big = 2**62 + 1
    facts = profile(pa.table({"i": pa.array([big, 3, big - 7], pa.int64())}))["columns"]["i"]
    assert (facts["min"], facts["max"]) == (3, big)
    assert facts["distinct"] == 2  # as doubles, big and big - 7 are the same number


def test_categorical_and_boolean_columns_get_top_values() -> None:
    table = _table()
    columns = profile(table, top_k=3)["columns"]
    s = columns["s"]
    values, counts = np.unique(table.column("s").to_numpy(zero_copy_only=False), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    assert s["kind"] == "categorical" and s["distinct"] == 4
    assert s["top"] == [{"value": str(values[k]), "count": int(counts[k])} for k in order[:3]]
    assert s["mean"] is None and s["quantiles"] is None and s["histogram"] is None
    assert columns["d"]["kind"] == "categorical" and columns["d"]["distinct"] == 2
    b = columns["b"]
    flags = table.column("b").to_numpy(zero_copy_only=False)[10:].astype(bool)
    assert b["kind"] == "boolean" and b["nulls"] == 10
    assert b["mean"] == pytest.approx(flags.mean())
    assert {t["value"]: t["count"] for t in b["top"]} == {
        True: int(flags.sum()),
        False: int((~flags).sum()),
    }


def test_top_values_break_ties_by_value() -> None:
    facts = profile_column(pa.array(["b", "a", "c", "c", "b", "a"]), top_k=2)
    assert facts["top"] == [{"value": "a", "count": 2}, {"value": "b", "count": 2}]
    assert profile_column(pa.array(["x"]), top_k=0)["top"] == []


def test_temporal_and_other_columns() -> None:
    columns = profile(_table())["columns"]
    t = columns["t"]
    assert t["kind"] == "temporal" and t["distinct"] == 5_000
    assert (t["min"], t["max"]) == ("1970-01-01T00:00:00", "1970-01-01T01:23:19")
    dates = profile_column(pa.array([dt.date(2024, 5, 1), None, dt.date(2023, 1, 2)]))
    assert (dates["min"], dates["max"], dates["nulls"]) == ("2023-01-02", "2024-05-01", 1)
    other = columns["l"]
    assert other["kind"] == "other" and other["count"] == 5_000 and other["distinct"] is None


def test_the_profile_is_plain_json_with_null_for_what_cannot_be_a_number() -> None:
    table = pa.table(
        {
            "all_nan": [np.nan, np.nan],
            "all_null": pa.nulls(2, pa.float64()),
            "huge": [1e308, 1.5e308],  # the mean overflows a double
            "wide": [-1e308, 1e308],  # no equal-width bins over this range
            "one": [3.0, 3.0],
            "when": pa.nulls(2, pa.timestamp("s")),
        }
    )
    facts = profile(table)
    text = json.dumps(facts, allow_nan=False)  # raises on NaN or infinity
    assert json.loads(text) == facts
    cols = facts["columns"]
    assert cols["all_nan"]["nan"] == 2 and cols["all_nan"]["mean"] is None
    assert cols["all_null"]["count"] == 0 and cols["all_null"]["distinct"] == 0
    assert cols["huge"]["mean"] is None and cols["huge"]["max"] == 1.5e308
    assert cols["wide"]["histogram"] is None and cols["wide"]["std"] is None
    assert cols["one"]["std"] == 0.0 and sum(cols["one"]["histogram"]["counts"]) == 2
    assert cols["when"]["min"] is None


def test_an_empty_table_profiles_to_zero_counts() -> None:
    facts = profile(pa.table({"x": pa.array([], pa.float64()), "s": pa.array([], pa.string())}))
    assert facts["rows"] == 0
    assert facts["columns"]["x"]["count"] == 0 and facts["columns"]["x"]["null_fraction"] is None
    assert facts["columns"]["s"]["top"] == []


def test_parquet_pandas_and_polars_inputs_profile_the_same(tmp_path: Path) -> None:
    table = _table().drop_columns(["l", "d"])
    expected = profile(table)
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=1_000)
    assert profile(path) == expected
    assert profile(str(path)) == expected
    from_pandas = profile(table.to_pandas())["columns"]
    # pandas 3 hands strings back as large_string; the facts are the same.
    assert {**from_pandas["s"], "type": "string"} == expected["columns"]["s"]
    assert from_pandas["i"] == expected["columns"]["i"]
    # pandas has one missing marker: its NaN arrive in Arrow as nulls.
    x = expected["columns"]["x"]
    assert from_pandas["x"]["nulls"] == x["nulls"] + x["nan"]
    assert from_pandas["x"]["quantiles"] == x["quantiles"]
    import polars as pl

    assert profile(pl.from_arrow(table))["columns"]["x"] == expected["columns"]["x"]


def test_bad_arguments_and_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="bins must be a positive integer"):
        profile(_table(10), bins=0)
    with pytest.raises(InvalidInputError, match="top_k"):
        profile(_table(10), top_k=-1)
    with pytest.raises(NotFoundError, match="no file at"):
        profile(tmp_path / "missing.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInputError, match=r"bad\.parquet as Parquet") as info:
        profile(bad)
    assert info.value.context["path"] == str(bad)
