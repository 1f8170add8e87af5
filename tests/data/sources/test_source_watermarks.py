"""Watermarks: exact round trips, never backwards, optimistic concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.data.sources import WatermarkRepository
from conveyor.data.sources.watermarks import decode_value, encode_value
from conveyor.errors import ConcurrentUpdateError, InvalidInputError
from conveyor.store.database import MetadataStore

INDIA = timezone(timedelta(hours=5, minutes=30))
TRICKY: list[Any] = [
    2**70,
    -(2**63),
    0.1 + 0.2,
    1e-310,
    -1.5e300,
    Decimal("1.10"),
    Decimal("-12345678901234567890.000000001"),
    datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
    datetime(2024, 5, 1, 18, 0, 0, 1, tzinfo=INDIA),
    datetime(1969, 12, 31, 23, 59, 59, 999999),
    date(2024, 2, 29),
    "ordered-ø-€-🚀",
]


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, datetime):
        return a.utcoffset() == b.utcoffset()
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return True


@given(
    st.one_of(
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.decimals(allow_nan=False, allow_infinity=False),
        st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
        st.dates(),
        st.text(),
    )
)
def test_encoding_round_trips_exactly(value: Any) -> None:
    decoded = decode_value(encode_value(value))
    assert type(decoded) is type(value)
    if isinstance(value, datetime):
        # Same wall time and offset, so the same instant. (``==`` between zones is
        # False by design for a wall time inside a DST gap, PEP 495.)
        assert decoded.utcoffset() == value.utcoffset()
        assert decoded.replace(tzinfo=None) == value.replace(tzinfo=None)
    else:
        assert decoded == value
    if isinstance(value, Decimal):
        assert str(decoded) == str(value)


def test_unorderable_values_are_refused() -> None:
    for bad in (True, float("nan"), float("inf"), Decimal("NaN"), None, [1], {"a": 1}):
        with pytest.raises(InvalidInputError):
            encode_value(bad)
    with pytest.raises(InvalidInputError, match="tag"):
        decode_value({"type": "complex", "value": "1+2j"})


@pytest.fixture
def any_store(store_url: str) -> Iterator[MetadataStore]:
    with MetadataStore.from_url(store_url) as opened:
        yield opened


def test_values_round_trip_through_the_store(any_store: MetadataStore) -> None:
    repository = WatermarkRepository(any_store)
    for number, value in enumerate(TRICKY):
        repository.advance(f"source-{number}", "c", value)
        stored = repository.get(f"source-{number}")
        assert _same(stored, value), (value, stored)
    assert repository.get("never-seen") is None
    assert [w.source for w in repository.list()] == sorted(f"source-{n}" for n in range(12))


def test_a_watermark_never_moves_backwards(any_store: MetadataStore) -> None:
    repository = WatermarkRepository(any_store)
    first = repository.advance("s", "ts", datetime(2024, 5, 1, tzinfo=UTC))
    assert first.version == 1
    with pytest.raises(InvalidInputError, match="never moves back"):
        repository.advance("s", "ts", datetime(2024, 4, 30, tzinfo=UTC))
    same = repository.advance("s", "ts", datetime(2024, 5, 1, 5, 30, tzinfo=INDIA))  # same instant
    assert same.version == 1
    later = repository.advance("s", "ts", datetime(2024, 5, 2, tzinfo=UTC))
    assert later.version == 2
    with pytest.raises(InvalidInputError, match="cannot be compared"):
        repository.advance("s", "ts", 5)
    with pytest.raises(InvalidInputError, match="column 'ts'"):
        repository.advance("s", "id", datetime(2024, 6, 1, tzinfo=UTC))
    assert repository.get("s") == datetime(2024, 5, 2, tzinfo=UTC)


def test_expected_version_detects_a_concurrent_advance(any_store: MetadataStore) -> None:
    repository = WatermarkRepository(any_store)
    repository.advance("s", "id", 10, expected_version=0)
    with pytest.raises(ConcurrentUpdateError):
        repository.advance("s", "id", 11, expected_version=0)  # someone stored the first one
    state = repository.state("s")
    assert state is not None
    repository.advance("s", "id", 20, expected_version=state.version)
    with pytest.raises(ConcurrentUpdateError):
        repository.advance("s", "id", 20, expected_version=state.version)
    assert repository.get("s") == 20
    assert repository.reset("s")
    assert not repository.reset("s")
    with pytest.raises(ConcurrentUpdateError, match="reset"):
        repository.advance("s", "id", 30, expected_version=2)


def test_two_threads_advancing_from_the_same_version_one_wins(any_store: MetadataStore) -> None:
    repository = WatermarkRepository(any_store)
    base = repository.advance("race", "id", 0)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []
    lock = threading.Lock()

    def advance(value: int) -> None:
        barrier.wait()
        try:
            repository.advance("race", "id", value, expected_version=base.version)
            result = "won"
        except ConcurrentUpdateError:
            result = "lost"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=advance, args=(v,)) for v in (5, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["lost", "won"]
    assert repository.get("race") in (5, 7)
    state = repository.state("race")
    assert state is not None and state.version == 2


def test_source_names_are_checked(store: MetadataStore) -> None:
    repository = WatermarkRepository(store)
    with pytest.raises(InvalidInputError, match="source"):
        repository.get("")
    with pytest.raises(InvalidInputError, match="source"):
        repository.advance("x" * 201, "id", 1)
