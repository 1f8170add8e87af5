from __future__ import annotations

from collections.abc import Iterator

import pytest

from conveyor.testing.services import postgres_schema


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL pointing at a fresh, empty schema of the test database."""
    with postgres_schema() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path}/conveyor.db"
