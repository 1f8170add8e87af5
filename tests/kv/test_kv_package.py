from __future__ import annotations

import subprocess
import sys

from conveyor.kv import KeyValueStore
from conveyor.kv.memory import MemoryKV
from conveyor.kv.redis import RedisKV
from conveyor.kv.sql import SqliteKV

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
    code = (
        "import sys, conveyor, conveyor.kv, conveyor.kv.memory, conveyor.kv.sql, "
        "conveyor.artifacts\n"
        "print(sorted(m for m in ('redis', 'fsspec', 's3fs') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
