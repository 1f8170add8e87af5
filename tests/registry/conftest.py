"""A registry on real stores: SQLite files, and a fresh schema of the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.artifacts.store import ArtifactStore
from conveyor.events.log import EventLog
from conveyor.registry import Registry
from conveyor.store.database import MetadataStore


@pytest.fixture
def registry(store_url: str, tmp_path: Path) -> Iterator[Registry]:
    with (
        MetadataStore.from_url(store_url) as store,
        ArtifactStore.from_url(f"file://{tmp_path}/artifacts") as artifacts,
        EventLog.from_url(f"sqlite:///{tmp_path}/events.db") as events,
    ):
        yield Registry(store, artifacts, events)


@pytest.fixture
def sqlite_registry(tmp_path: Path) -> Iterator[Registry]:
    with (
        MetadataStore.from_url(f"sqlite:///{tmp_path}/conveyor.db") as store,
        ArtifactStore.from_url(f"file://{tmp_path}/artifacts") as artifacts,
    ):
        yield Registry(store, artifacts)
