from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conveyor.backends import CACHE
from conveyor.errors import BackendUnavailableError
from conveyor.testing.kv import KeyValueContract
from conveyor.testing.wait import wait_until


class TestSqliteKV(KeyValueContract):
    @pytest.fixture
    def kv_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/kv/cache.db?prefix=t:"


def test_expired_rows_are_purged_when_read(tmp_path: Path) -> None:
    db = tmp_path / "kv.db"
    with CACHE.open(f"sqlite:///{db}") as kv:
        kv.set("gone", b"x", ttl=0.2)
        kv.set("kept", b"y")
        wait_until(lambda: kv.get("gone") is None, message="the key to expire")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key FROM kv ORDER BY key").fetchall()
    conn.close()
    assert rows == [("conveyor:kept",)]


def test_incr_is_atomic_across_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    script = textwrap.dedent(
        f"""
        from conveyor.backends import CACHE
        with CACHE.open({url!r}) as kv:
            for _ in range(100):
                kv.incr("hits")
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outcomes = [(proc.communicate(timeout=120)[1], proc.returncode) for proc in procs]
    for stderr, returncode in outcomes:  # every pipe is closed before the first assert
        assert returncode == 0, stderr
    with CACHE.open(url) as kv:
        assert kv.get("hits") == b"400"


def test_unwritable_location_is_a_backend_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(BackendUnavailableError, match="cannot be used"):
        CACHE.open(f"sqlite:///{blocker}/kv.db")


def test_in_memory_database() -> None:
    with CACHE.open("sqlite:///:memory:") as kv:
        kv.set("k", b"v")
        assert kv.get("k") == b"v"


def test_a_file_from_before_the_score_columns_gets_them(tmp_path: Path) -> None:
    from conveyor.kv import Versioned

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL) "
            "WITHOUT ROWID"
        )
        conn.execute("INSERT INTO kv VALUES ('conveyor:old', x'6f6c64', NULL)")
    conn.close()
    for _ in range(2):  # opening again finds the columns there
        with CACHE.open(f"sqlite:///{db}") as kv:
            assert kv.get("old") == b"old"
            assert kv.set_many_if_newer({"k": Versioned(b"v", (1, 0))}) in (0, 1)
            assert kv.set_many_if_newer({"k": Versioned(b"older", (0, 0))}) == 0
            assert kv.get("k") == b"v"
