"""Real stores for the pipeline tests: SQLite files, and a fresh PostgreSQL schema."""

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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backends]:
    """The same test on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        urls = (f"sqlite:///{tmp_path}/conveyor.db", f"sqlite:///{tmp_path}/events.db")
        b = Backends(*urls)
        yield b
        b.close()
    else:
        url = request.getfixturevalue("pg_url")
        b = Backends(url, url)
        yield b
        b.close()
