from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from conveyor.store.database import MetadataStore
from conveyor.testing.services import require

MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[MetadataStore]:
    """A fresh metadata store (SQLite) for watermarks."""
    with MetadataStore.from_url(sqlite_url) as opened:
        yield opened


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[MetadataStore]:
    with MetadataStore.from_url(pg_url) as opened:
        yield opened


@pytest.fixture
def mariadb_table() -> Iterator[tuple[str, str]]:
    """(URL, name) of a uniquely named table in MariaDB's ``test`` database, dropped afterwards."""
    import pymysql

    require("127.0.0.1", 3306, "MariaDB")
    name = f"cv_src_{uuid.uuid4().hex[:10]}"
    try:
        yield MARIADB_URL, name
    finally:
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test")
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS `{name}`")
            conn.commit()
        finally:
            conn.close()
