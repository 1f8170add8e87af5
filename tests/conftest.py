"""The backend matrix's fixtures (the table is conveyor.testing.matrix) and the single places.

``store_url``, ``kv_url``, ``ratelimit_url`` and ``events_url`` run a test once per backend
of their seam; ``backend_set`` once per named combination of a whole project's backends.
Each gives a fresh, isolated place and removes it afterwards; each backend on a service
carries that service's marker. Narrow one with ``conveyor.testing.matrix.only``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.testing import matrix
from conveyor.testing.services import postgres_schema

#: Each test file's seconds in the last recorded run (scripts/test_durations.py).
DURATIONS = Path(__file__).with_name("durations.json")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses one service's place directly (``pg_url``) carries its marker; files
    run longest first.

    ``make test`` hands whole files to two workers as they free up (``--dist loadfile
    --no-loadscope-reorder``): with the longest first, the last files to start are short
    ones, and neither worker idles for minutes while the other finishes a long file (the
    quickstart's story alone is about three minutes). The order within a file is kept.
    """
    for item in items:
        for mark in matrix.service_marks(getattr(item, "fixturenames", ())):
            item.add_marker(mark)
    seconds: dict[str, float] = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::", 1)[0], 0.0))


def _place(fixture: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    seam, _ = matrix.AXES[fixture]
    with matrix.place(seam, request.param, folder) as url:
        yield url


@pytest.fixture(params=matrix.params("store_url"))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A metadata store URL: an SQLite file, or a fresh PostgreSQL schema."""
    yield from _place("store_url", request, tmp_path)


@pytest.fixture(params=matrix.params("kv_url"))
def kv_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A key-value (cache) URL under a unique prefix: a named memory space, or Redis."""
    yield from _place("kv_url", request, tmp_path)


@pytest.fixture(params=matrix.params("ratelimit_url"))
def ratelimit_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A rate limiter URL: in memory, or Redis under a unique prefix."""
    yield from _place("ratelimit_url", request, tmp_path)


@pytest.fixture(params=matrix.params("events_url"))
def events_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An event log URL: an SQLite file, a PostgreSQL schema, a JetStream or a Redis stream."""
    yield from _place("events_url", request, tmp_path)


@pytest.fixture(params=matrix.params("backend_set"))
def backend_set(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a project on one named combination of backends (CONVEYOR_STORE...)."""
    with matrix.backend_env(request.param, tmp_path / "backends") as env:
        yield env


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL pointing at a fresh, empty schema of the test database."""
    with postgres_schema() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/conveyor.db"
