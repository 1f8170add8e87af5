from __future__ import annotations

from conveyor.kv import KeyValueStore
from conveyor.kv.memory import MemoryKV
from conveyor.kv.redis import RedisKV
from conveyor.kv.sql import SqliteKV
from fresh_python import loaded_of

# Checked by mypy: each backend class satisfies the protocol structurally.
BACKENDS: list[type[KeyValueStore]] = [MemoryKV, SqliteKV, RedisKV]


def test_backends_are_registered_for_the_cache_seam() -> None:
    from conveyor.backends import CACHE

    assert [CACHE.resolve(u) for u in ("memory://", "sqlite:///x.db", "redis://h/0")] == [
        MemoryKV,
        SqliteKV,
        RedisKV,
    ]


def test_importing_conveyor_loads_no_backend_driver() -> None:
    code = "import conveyor, conveyor.kv, conveyor.kv.memory, conveyor.kv.sql, conveyor.artifacts"
    assert loaded_of(("redis", "fsspec", "s3fs"), code) == []
