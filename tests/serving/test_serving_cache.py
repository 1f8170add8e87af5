"""The prediction cache against the in-memory store and real Redis, with real models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.ensemble import RandomForestClassifier

from conveyor.backends import CACHE
from conveyor.errors import InvalidInputError
from conveyor.kv import KeyValueStore
from conveyor.serving.cache import PredictionCache, decode_value, encode_value, input_digest
from conveyor.testing.wait import wait_until


@pytest.fixture(scope="module")
def model() -> Any:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] - x[:, 2] > 0).astype(int)
    return RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)


def _predict(model: Any, table: pa.Table) -> Any:
    x = np.column_stack([table.column(n).to_numpy() for n in ("a", "b", "c")])
    return model.predict_proba(x)


def _table(seed: int = 0, rows: int = 4) -> pa.Table:
    x = np.random.default_rng(seed).normal(size=(rows, 3))
    return pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]})


@pytest.fixture
def kv(kv_url: str) -> Iterator[KeyValueStore]:
    """A store of each key-value backend of the matrix, under a unique prefix."""
    store: KeyValueStore = CACHE.open(kv_url)
    with store:
        yield store


def test_hit_after_put_and_miss_for_another_version(kv: KeyValueStore, model: Any) -> None:
    cache = PredictionCache(kv, active=[3, 4])
    table = _table()
    assert cache.get(3, table) is None
    prediction = _predict(model, table)
    assert cache.put(3, table, prediction)
    got = cache.get(3, table)
    np.testing.assert_array_equal(got, prediction)
    assert got.dtype == prediction.dtype and got.shape == prediction.shape
    assert cache.get(4, table) is None  # another version
    assert cache.get(3, _table(seed=1)) is None  # another input
    assert (cache.hits, cache.misses) == (1, 3)
    assert kv.get(f"pred:3:{input_digest(table)}") is not None  # the documented key


def test_a_version_leaving_the_active_set_is_unreachable(kv: KeyValueStore, model: Any) -> None:
    cache = PredictionCache(kv)
    table = _table()
    prediction = _predict(model, table)
    assert not cache.put(7, table, prediction)  # nothing is active yet
    cache.set_active(["7"])
    assert cache.put(7, table, prediction)
    assert cache.get("7", table) is not None  # ids compare as strings
    cache.set_active([8])
    assert cache.get(7, table) is None
    assert not cache.put(7, table, prediction)
    cache.set_active([7, 8])  # a rollback to it makes it reachable again
    np.testing.assert_array_equal(cache.get(7, table), prediction)


def test_same_values_in_another_column_order_hit(kv: KeyValueStore, model: Any) -> None:
    cache = PredictionCache(kv, active=[1])
    table = _table()
    cache.put(1, table, _predict(model, table))
    reordered = table.select(["c", "a", "b"])
    rechunked = pa.concat_tables([table.slice(0, 2), table.slice(2)])
    with_metadata = table.replace_schema_metadata({"pandas": "{}"})
    for same in (reordered, rechunked, with_metadata):
        assert cache.get(1, same) is not None
    assert cache.hits == 3


def test_same_values_with_another_dtype_miss(kv: KeyValueStore, model: Any) -> None:
    cache = PredictionCache(kv, active=[1])
    ints = pa.table({"a": pa.array([1, 2], pa.int64()), "b": pa.array([3, 4], pa.int64())})
    cache.put(1, ints, np.array([0, 1]))
    as_int32 = ints.cast(pa.schema([("a", pa.int32()), ("b", pa.int64())]))
    as_float = ints.cast(pa.schema([("a", pa.float64()), ("b", pa.int64())]))
    renamed = ints.rename_columns(["a", "z"])
    for other in (as_int32, as_float, renamed):
        assert cache.get(1, other) is None
    assert cache.get(1, ints) is not None


def test_oversize_values_are_not_stored(kv: KeyValueStore) -> None:
    cache = PredictionCache(kv, max_value_bytes=1000, active=[1])
    small, large = _table(rows=2), _table(rows=500)
    assert cache.put(1, small, np.zeros(2))
    assert not cache.put(1, large, np.zeros(500))  # 4,000 bytes of float64
    assert cache.get(1, large) is None
    assert cache.skipped == 1


def test_values_without_an_encoding_are_not_stored(kv: KeyValueStore) -> None:
    cache = PredictionCache(kv, active=[1])
    table = _table()
    assert not cache.put(1, table, np.array([object(), object()], dtype=object))
    assert not cache.put(1, table, {1, 2})  # a set is not JSON
    assert cache.get(1, table) is None
    assert cache.skipped == 2


def test_ttl_is_passed_to_the_store(kv: KeyValueStore) -> None:
    cache = PredictionCache(kv, ttl=0.5, active=[1])
    table = _table()
    cache.put(1, table, np.ones(4))
    assert cache.get(1, table) is not None
    # Expiry itself is the store's contract (tests/kv); here: the entry expires at all.
    wait_until(lambda: cache.get(1, table) is None, message="the cache entry to expire")


@pytest.mark.parametrize(
    "value",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array([True, False]),
        np.array(["cat", "dog"]),
        np.array(3.5),
        np.asfortranarray(np.arange(6).reshape(2, 3)),
        np.arange(10)[::3],
        np.array(["2024-01-01"], dtype="datetime64[ns]"),
    ],
    ids=["f32-2d", "bool", "unicode", "0d", "fortran", "strided", "datetime"],
)
def test_numpy_round_trip(value: np.ndarray) -> None:
    data = encode_value(value)
    assert data is not None and not data.startswith(b"\x80")  # not a pickle
    got = decode_value(data)
    assert got.dtype == value.dtype and got.shape == value.shape
    np.testing.assert_array_equal(got, value)
    got[...] = got  # writable


def test_other_value_kinds_round_trip() -> None:
    frame = pd.DataFrame({"p0": [0.1, 0.9], "p1": [0.9, 0.1]}, index=[5, 6])
    pd.testing.assert_frame_equal(decode_value(encode_value(frame)), frame)  # type: ignore[arg-type]
    series = pd.Series([1, 0], index=[3, 4], name="label")
    pd.testing.assert_series_equal(decode_value(encode_value(series)), series)  # type: ignore[arg-type]
    unnamed = pd.Series([0.5])
    pd.testing.assert_series_equal(decode_value(encode_value(unnamed)), unnamed)  # type: ignore[arg-type]
    table = pa.table({"label": [1, 0]})
    assert decode_value(encode_value(table)).equals(table)  # type: ignore[arg-type]
    assert decode_value(encode_value([1, 0, 1])) == [1, 0, 1]  # type: ignore[arg-type]
    assert decode_value(encode_value({"label": [1], "score": 0.5})) == {  # type: ignore[arg-type]
        "label": [1],
        "score": 0.5,
    }


def test_damaged_entries_are_misses(kv: KeyValueStore) -> None:
    cache = PredictionCache(kv, active=[1])
    table = _table()
    kv.set(PredictionCache.key(1, input_digest(table)), b"N\x07garbage")
    assert cache.get(1, table) is None
    assert cache.misses == 1


def test_digest_can_be_passed_to_skip_hashing_twice(kv: KeyValueStore) -> None:
    cache = PredictionCache(kv, active=[1])
    table = _table()
    digest = input_digest(table)
    assert cache.get(1, table, digest=digest) is None
    cache.put(1, table, np.ones(4), digest=digest)
    assert cache.get(1, table) is not None


def test_digest_refuses_what_it_cannot_key() -> None:
    with pytest.raises(InvalidInputError, match="duplicated column names: a"):
        input_digest(pa.table([[1], [2]], names=["a", "a"]))
    with pytest.raises(InvalidInputError, match=r"pyarrow\.Table"):
        input_digest({"a": [1]})  # type: ignore[arg-type]


def test_bad_arguments_name_the_field() -> None:
    with CACHE.open("memory://") as kv:
        with pytest.raises(InvalidInputError) as info:
            PredictionCache(kv, ttl=0)
        assert info.value.context["field"] == "ttl"
        with pytest.raises(InvalidInputError) as info:
            PredictionCache(kv, max_value_bytes=0)
        assert info.value.context["field"] == "max_value_bytes"


def test_a_store_that_is_down_degrades_to_misses() -> None:
    # A real Redis client pointed at a port where nothing listens.
    with CACHE.open("redis://127.0.0.1:1/0?prefix=test-down:") as kv:
        cache = PredictionCache(kv, active=[1])
        table = _table()
        assert cache.get(1, table) is None
        assert not cache.put(1, table, np.ones(4))
        assert cache.errors == 2
        assert cache.misses == 1
