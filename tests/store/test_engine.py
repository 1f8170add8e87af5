from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.backends import BackendURL
from conveyor.errors import BackendUnavailableError, InvalidInputError
from conveyor.store.engine import READ, connect_check, create_engine


def test_sqlite_connections_are_wal_fsynced_with_foreign_keys(tmp_path: Path) -> None:
    url = BackendURL.parse(f"sqlite:///{tmp_path}/nested/dir/x.db")
    engine = create_engine(url, "store")
    try:
        with engine.connect() as conn:
            pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 2  # FULL: a commit is on disk when it returns
            assert pragma("foreign_keys") == 1
            assert pragma("busy_timeout") == 30_000
        assert (tmp_path / "nested" / "dir" / "x.db").exists()
    finally:
        engine.dispose()


def test_sqlite_writers_take_the_lock_up_front_and_readers_do_not(tmp_path: Path) -> None:
    url = BackendURL.parse(f"sqlite:///{tmp_path}/x.db")
    engine = create_engine(url, "store")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with engine.begin() as writer:
            writer.exec_driver_sql("INSERT INTO t VALUES (1)")
            # A deferred reader reads the last committed state while the writer holds the lock.
            with engine.connect().execution_options(**READ) as reader:
                assert reader.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
        with engine.connect().execution_options(**READ) as reader:
            assert reader.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    finally:
        engine.dispose()


def test_postgres_driver_suffix_other_than_psycopg_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="psycopg 3"):
        create_engine(BackendURL.parse("postgresql+psycopg2://u@h/db"), "store")


def test_unreachable_postgres_names_host_port_and_doctor() -> None:
    url = BackendURL.parse("postgresql://postgres:secret@127.0.0.1:1/test")
    engine = create_engine(url, "store")
    try:
        with pytest.raises(BackendUnavailableError) as info:
            connect_check(engine, url, "store")
    finally:
        engine.dispose()
    message = str(info.value)
    assert "127.0.0.1:1" in message and "conveyor doctor" in message
    assert "secret" not in message
    assert info.value.context["port"] == 1


def test_missing_postgres_database_is_unavailable(pg_url: str) -> None:
    url = BackendURL.parse(pg_url).with_(path="/no_such_database_here")
    engine = create_engine(url, "store")
    try:
        with pytest.raises(BackendUnavailableError, match="no_such_database_here"):
            connect_check(engine, url, "store")
    finally:
        engine.dispose()
