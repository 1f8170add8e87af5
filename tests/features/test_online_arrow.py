"""The column-at-a-time write path gives byte for byte the records of the row-by-row path,
on random tables of every column type it takes, and hands anything else to the rows."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from conveyor.errors import InvalidInputError
from conveyor.features.online import _kind, _latest_of_rows
from conveyor.features.online_arrow import latest_of_table

NOW_US = 1_800_000_000_000_000
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _both(
    table: pa.Table,
    keys: tuple[str, ...] = ("customer_id",),
    features: tuple[str, ...] = ("x",),
    types: dict[str, str] | None = None,
    created: str | None = None,
) -> tuple[Any, Any]:
    declared = {f: _kind(t, f) for f, t in (types or {}).items()}
    fast = latest_of_table("v w", table, keys, "ts", created, features, declared, NOW_US)
    rows = _latest_of_rows(
        "v w", table.to_pylist(), keys, "ts", created, features, declared, NOW_US
    )
    return fast, rows


@pytest.mark.parametrize("seed", range(12))
def test_random_tables_give_the_records_of_the_row_path(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(1, 300)
    unit = rng.choice(["s", "ms", "us", "ns"])
    tz = rng.choice([None, "UTC", "Europe/Paris"])
    when = [
        T0 + timedelta(seconds=rng.randrange(5), microseconds=rng.randrange(3)) for _ in range(n)
    ]
    if unit == "s":
        when = [w.replace(microsecond=0) for w in when]
    elif unit == "ms":
        when = [w.replace(microsecond=w.microsecond // 1000 * 1000) for w in when]
    floats = [rng.choice([1.5, -0.0, math.nan, math.inf, None, rng.random()]) for _ in range(n)]
    table = pa.table(
        {
            "customer_id": pa.array([rng.randrange(20) for _ in range(n)], pa.int64()),
            "region": pa.array([rng.choice(["eu", "us/west", "é&{x}", ""]) for _ in range(n)]),
            "ts": pa.array(when, pa.timestamp(unit, tz)),
            "made": pa.array(
                [T0 + timedelta(seconds=rng.randrange(3)) for _ in range(n)], pa.timestamp("us")
            ),
            "f": pa.array(floats, pa.float64()),
            "i_as_f": pa.array([rng.choice([None, 2**53 + 1, 3]) for _ in range(n)], pa.int64()),
            "i": pa.array([rng.choice([None, -(2**63), 7]) for _ in range(n)], pa.int64()),
            "u": pa.array([rng.choice([2**64 - 1, 0]) for _ in range(n)], pa.uint64()),
            "s": pa.array([rng.choice(["a", None, "ü"]) for _ in range(n)], pa.large_string()),
            "b": pa.array([rng.choice([True, False, None]) for _ in range(n)]),
            "d": pa.array([rng.choice([date(2020, 1, 2), None]) for _ in range(n)]),
            "t": pa.array([rng.choice([T0, None]) for _ in range(n)], pa.timestamp("ns", "UTC")),
            "raw": pa.array([rng.choice([b"\x00\xff", None]) for _ in range(n)], pa.binary()),
            "nothing": pa.nulls(n),
        }
    )
    features = ("f", "i_as_f", "i", "u", "s", "b", "d", "t", "raw", "nothing")
    types = {"f": "double", "i_as_f": "float", "i": "int64", "s": "string", "d": "date"}
    if rng.random() < 0.5:
        types |= {"b": "bool", "t": "timestamp", "raw": "bytes", "u": "uint64"}
    keys = rng.choice([("customer_id",), ("region",), ("region", "customer_id")])
    created = rng.choice([None, "made"])
    fast, rows = _both(table, keys, features, types, created)
    assert fast is not None
    assert fast == rows


@pytest.mark.parametrize("column", [pa.array([1, None], pa.int64()), pa.array([1.0, 2.0])])
def test_keys_it_does_not_take_go_row_by_row(column: pa.Array) -> None:
    table = pa.table({"customer_id": column, "ts": pa.array([T0, T0]), "x": [1, 2]})
    assert latest_of_table("v", table, ("customer_id",), "ts", None, ("x",), {}, NOW_US) is None
    with pytest.raises(InvalidInputError, match="join key 'customer_id'"):
        _both(table)  # the rows refuse it, naming the key


@pytest.mark.parametrize(
    ("column", "types"),
    [
        (pa.array([1, 2], pa.int64()), {"x": "string"}),  # the declared type differs
        (pa.array([True, False]), {"x": "int64"}),
        (pa.array([[1], [2]]), {}),  # lists: checked value by value
        (pa.array(["a", "b"]).dictionary_encode(), {}),
    ],
)
def test_features_it_does_not_take_go_row_by_row(column: pa.Array, types: dict[str, str]) -> None:
    table = pa.table({"customer_id": [1, 2], "ts": pa.array([T0, T0]), "x": column})
    fast = latest_of_table(
        "v",
        table,
        ("customer_id",),
        "ts",
        None,
        ("x",),
        {f: _kind(t, f) for f, t in types.items()},
        NOW_US,
    )
    assert fast is None


def test_times_it_does_not_take_go_row_by_row() -> None:
    before_1970 = pa.array([-1_500, 10], pa.int64()).cast(pa.timestamp("ns"))
    for ts in (before_1970, pa.array([T0, None]), pa.array(["2026-01-01", "2026-01-02"])):
        table = pa.table({"customer_id": [1, 2], "ts": ts, "x": [1, 2]})
        assert latest_of_table("v", table, ("customer_id",), "ts", None, ("x",), {}, NOW_US) is None
