from __future__ import annotations

import uuid

import pytest

from conveyor.backends import CACHE
from conveyor.errors import InvalidInputError
from conveyor.kv.memory import MemoryKV


def test_lru_eviction() -> None:
    with CACHE.open(f"memory://lru-{uuid.uuid4().hex}?max_entries=3") as kv:
        assert isinstance(kv, MemoryKV)
        kv.set_many({"a": b"1", "b": b"2", "c": b"3"})
        assert kv.get("a") == b"1"  # a is now the most recently used
        kv.set("d", b"4")  # evicts b, the least recently used
        assert kv.get_many(["a", "b", "c", "d"]) == [b"1", None, b"3", b"4"]
        # Reading touched a, c, d in that order; touch a again so c is the oldest.
        assert kv.get("a") == b"1"
        kv.incr("e")  # evicts c
        assert kv.get_many(["a", "c", "d", "e"]) == [b"1", None, b"4", b"1"]
        assert len(kv) == 3


def test_unnamed_memory_stores_are_private() -> None:
    with CACHE.open("memory://") as first, CACHE.open("memory://") as second:
        first.set("k", b"v")
        assert second.get("k") is None


def test_named_space_keeps_its_bound() -> None:
    name = f"bound-{uuid.uuid4().hex}"
    with CACHE.open(f"memory://{name}?max_entries=2") as first:
        with CACHE.open(f"memory://{name}") as same:
            assert same.max_entries == 2
        with pytest.raises(InvalidInputError, match="max_entries=2"):
            CACHE.open(f"memory://{name}?max_entries=5")
        first.clear()


@pytest.mark.parametrize("query", ["max_entries=0", "max_entries=x", "colour=red"])
def test_bad_options(query: str) -> None:
    with pytest.raises(InvalidInputError):
        CACHE.open(f"memory://?{query}")
