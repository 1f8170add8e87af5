"""Real stores for the pipeline tests: SQLite files, and each store of the backend matrix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import Backends


@pytest.fixture
def sqlite_backends(tmp_path: Path) -> Iterator[Backends]:
    backends = Backends(f"sqlite:///{tmp_path}/conveyor.db", f"sqlite:///{tmp_path}/events.db")
    yield backends
    backends.close()


@pytest.fixture
def backends(store_url: str, tmp_path: Path) -> Iterator[Backends]:
    """The same test on each metadata store of the matrix, with the event log beside it:
    an SQLite file next to an SQLite store, the same PostgreSQL schema as a PostgreSQL one."""
    on_postgres = store_url.startswith("postgresql")
    b = Backends(store_url, store_url if on_postgres else f"sqlite:///{tmp_path}/events.db")
    yield b
    b.close()
