"""An empty database gets the writes the process's migrations made once, replayed: the same
tables, indexes, rows and revisions as migrating it step by step, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor.store import migrate
from conveyor.store.database import MetadataStore
from conveyor.testing.services import postgres_schema


@pytest.fixture
def no_schemas() -> Iterator[None]:
    """The process's recorded migrations set aside, so the first database migrates."""
    saved = dict(migrate._REPLAYS)
    migrate._REPLAYS.clear()
    yield
    migrate._REPLAYS.clear()
    migrate._REPLAYS.update(saved)


@pytest.fixture
def upgrades(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The script location of every Alembic upgrade run from here on."""
    from alembic import command

    calls: list[str] = []
    real = command.upgrade

    def counting(config: Any, revision: str, **kw: Any) -> None:
        calls.append(config.get_main_option("script_location"))
        real(config, revision, **kw)

    monkeypatch.setattr(command, "upgrade", counting)
    return calls


def _contents(
    path: Path,
) -> tuple[set[tuple[str, str, str, str]], dict[str, list[tuple[Any, ...]]]]:
    with sqlite3.connect(path) as db:
        master = set(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        tables = [n for t, n, _, _ in master if t == "table" and not n.startswith("sqlite_")]
        rows = {n: sorted(db.execute(f'SELECT * FROM "{n}"'), key=repr) for n in tables}
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    return master, rows


def test_a_replayed_database_is_the_migrated_one(
    tmp_path: Path, no_schemas: None, upgrades: list[str]
) -> None:
    with MetadataStore.from_url(f"sqlite:///{tmp_path}/first.db"):
        pass
    chains = migrate.store_chains()
    assert upgrades == [c.script_location for c in chains]  # every chain migrated once
    with MetadataStore.from_url(f"sqlite:///{tmp_path}/second.db") as store:
        assert store.health()["migrated"] is True
    assert len(upgrades) == len(chains)  # none for the second: it was replayed
    first, second = _contents(tmp_path / "first.db"), _contents(tmp_path / "second.db")
    assert first[0] == second[0]
    assert first[1] == second[1]
    versions = {c.version_table for c in chains}
    assert versions <= set(second[1])  # every chain's revision came along
    assert {t: rows for t, rows in second[1].items() if rows}.keys() >= versions


def test_a_database_with_a_table_in_it_is_migrated_not_replayed(
    tmp_path: Path, no_schemas: None, upgrades: list[str]
) -> None:
    with MetadataStore.from_url(f"sqlite:///{tmp_path}/first.db"):
        pass
    upgrades.clear()
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        db.execute("INSERT INTO notes (body) VALUES ('kept')")
    with MetadataStore.from_url(f"sqlite:///{path}"):
        pass
    assert upgrades == [c.script_location for c in migrate.store_chains()]
    master, rows = _contents(path)
    assert rows["notes"] == [(1, "kept")]
    assert {n for t, n, _, _ in master if t == "table"} - {"notes"} == {
        n for t, n, _, _ in _contents(tmp_path / "first.db")[0] if t == "table"
    }


def test_other_heads_are_not_given_this_schema(tmp_path: Path, no_schemas: None) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/events.db")
    try:
        # The event log's chain alone: its own key, so the store's schema is not replayed.
        with MetadataStore.from_url(f"sqlite:///{tmp_path}/store.db"):
            pass
        migrate.upgrade(engine, "conveyor.events:migrations", "conveyor_events_version")
    finally:
        engine.dispose()
    with sqlite3.connect(tmp_path / "events.db") as db:
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "conveyor_events_version" in names
    assert "conveyor_core_version" not in names
    assert len(migrate._REPLAYS) == 2


def _pg_contents(url: str) -> dict[str, Any]:
    """The schema's columns, constraints, indexes and rows, named without the schema."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar()

            def rows(sql: str) -> list[tuple[Any, ...]]:
                found = conn.exec_driver_sql(sql, (schema,)).all()
                return sorted(tuple(str(v).replace(f"{schema}.", "") for v in r) for r in found)

            tables = [t for (t,) in rows("SELECT tablename FROM pg_tables WHERE schemaname = %s")]
            return {
                "columns": rows(
                    "SELECT table_name, column_name, data_type, is_nullable, column_default"
                    " FROM information_schema.columns WHERE table_schema = %s"
                ),
                "constraints": rows(
                    "SELECT c.conname, c.contype, pg_get_constraintdef(c.oid) FROM pg_constraint c"
                    " JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s"
                ),
                "indexes": rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s"),
                "rows": {
                    t: sorted(map(repr, conn.exec_driver_sql(f'SELECT * FROM "{t}"')))
                    for t in tables
                },
            }
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_replayed_postgresql_schema_is_the_migrated_one(
    no_schemas: None, upgrades: list[str]
) -> None:
    chains = migrate.store_chains()
    with postgres_schema() as first, postgres_schema() as second:
        with MetadataStore.from_url(first):
            pass
        assert upgrades == [c.script_location for c in chains]
        with MetadataStore.from_url(second) as store:
            assert store.health()["migrated"] is True
        assert len(upgrades) == len(chains)  # the second schema was replayed
        migrated, replayed = _pg_contents(first), _pg_contents(second)
    assert migrated == replayed
    assert {c.version_table for c in chains} <= {t for t, rows in replayed["rows"].items() if rows}


@pytest.mark.postgres
def test_a_replay_that_fails_is_rolled_back_and_the_migrations_run(
    no_schemas: None, upgrades: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with postgres_schema() as first, postgres_schema() as second:
        with MetadataStore.from_url(first):
            pass
        key = next(iter(migrate._REPLAYS))
        migrate._REPLAYS[key].statements.append(("CREATE TABLE broken (", {}, False))
        upgrades.clear()
        with MetadataStore.from_url(second) as store:
            assert store.health()["migrated"] is True
        assert upgrades == [c.script_location for c in migrate.store_chains()]
        assert "replaying the recorded migrations failed" in caplog.text
        assert _pg_contents(first) == _pg_contents(second)


def test_a_sqlite_replay_that_fails_is_rolled_back_and_the_migrations_run(
    tmp_path: Path, no_schemas: None, upgrades: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with MetadataStore.from_url(f"sqlite:///{tmp_path}/first.db"):
        pass
    key = next(iter(migrate._REPLAYS))
    migrate._REPLAYS[key].statements.append(("CREATE TABLE broken (", (), False))
    upgrades.clear()
    with MetadataStore.from_url(f"sqlite:///{tmp_path}/second.db") as store:
        assert store.health()["migrated"] is True
    assert upgrades == [c.script_location for c in migrate.store_chains()]
    assert "replaying the recorded migrations failed" in caplog.text
    assert _contents(tmp_path / "first.db") == _contents(tmp_path / "second.db")


_KILLED_MID_REPLAY = """
import os, signal, sys
from conveyor.store import migrate
from conveyor.store.database import MetadataStore

with MetadataStore.from_url(f"sqlite:///{sys.argv[1]}/first.db"):
    pass
replay = next(iter(migrate._REPLAYS.values()))
replay.statements.insert(len(replay.statements) // 2, ("SELECT die()", (), False))
real = migrate._Replay.run

def run(self, conn):
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    conn.connection.dbapi_connection.create_function("die", 0, die)
    return real(self, conn)

migrate._Replay.run = run
MetadataStore.from_url(f"sqlite:///{sys.argv[1]}/second.db")
"""


def test_a_process_killed_mid_replay_leaves_an_empty_database_that_migrates(
    tmp_path: Path, no_schemas: None
) -> None:
    import signal
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_REPLAY, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    with sqlite3.connect(tmp_path / "second.db") as db:  # half the writes were made, none kept
        assert db.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    with MetadataStore.from_url(f"sqlite:///{tmp_path}/second.db") as store:
        assert store.health()["migrated"] is True
    assert _contents(tmp_path / "first.db") == _contents(tmp_path / "second.db")
