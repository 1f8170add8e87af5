"""What the sink tests share: a project whose store and SQL event log live in a schema
of the real PostgreSQL of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.project import Project, init_project
from conveyor.testing.services import postgres_schema


@pytest.fixture
def pg_env() -> Iterator[dict[str, str]]:
    with postgres_schema() as url:
        yield {"CONVEYOR_STORE": url, "CONVEYOR_EVENTS": url}


@pytest.fixture
def project(tmp_path: Path, pg_env: dict[str, str]) -> Iterator[Project]:
    root = tmp_path / "proj"
    init_project(root, name="sunk")
    with Project.open(root, env=pg_env) as opened:
        yield opened
