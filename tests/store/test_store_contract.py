"""The metadata store contract, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.testing.store import MetadataStoreContract


class TestSQLiteStore(MetadataStoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/conveyor.db"


@pytest.mark.postgres
class TestPostgresStore(MetadataStoreContract):
    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return pg_url
