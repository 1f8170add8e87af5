"""A project for the monitoring tests, with its store and event log both on SQLite or both
on PostgreSQL (one schema, as a deployment shares one database). No Redis: compaction and
queries use neither the cache nor the rate limiter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.project import Project, init_project
from conveyor.testing.services import postgres_schema

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """``CONVEYOR_STORE`` and ``CONVEYOR_EVENTS`` of a fresh place."""
    if request.param == "postgresql":
        with postgres_schema() as url:
            yield {"CONVEYOR_STORE": url, "CONVEYOR_EVENTS": url}
    else:
        yield {
            "CONVEYOR_STORE": f"sqlite:///{tmp_path}/store.db",
            "CONVEYOR_EVENTS": f"sqlite:///{tmp_path}/events.db",
        }


@pytest.fixture
def project(tmp_path: Path, backends: dict[str, str]) -> Iterator[Project]:
    root = tmp_path / "proj"
    init_project(root, name="watched")
    with Project.open(root, env=backends) as opened:
        yield opened
