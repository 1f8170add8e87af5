"""The background writer under failure: outages, refused rows, back-pressure, exit.

Failures are real: the table is renamed away, a trigger or CHECK constraint
refuses rows, another connection holds the write lock.
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from conveyor.backends import BackendURL
from conveyor.errors import BackendError, ClosedError, InvalidInputError
from conveyor.events import EventLog
from conveyor.testing.matrix import only

WRITER_THREAD = "conveyor-events-writer"


class Database:
    """Direct access to the log's database, behind the log's back."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = BackendURL.parse(url)
        self.sqlite = parsed.scheme == "sqlite"
        self.path = parsed.location

    def execute(self, sql: str) -> None:
        if self.sqlite:
            with sqlite3.connect(self.path, isolation_level=None) as conn:
                conn.execute(sql)
            conn.close()
        else:
            with psycopg.connect(self.url, autocommit=True) as pg:
                pg.execute(sql)

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the lock every insert into ``events`` needs."""
        if self.sqlite:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
                conn.close()
        else:
            with psycopg.connect(self.url) as pg:
                pg.execute("LOCK TABLE events IN EXCLUSIVE MODE")
                try:
                    yield
                finally:
                    pg.rollback()

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The events table is gone until the block ends."""
        self.execute("ALTER TABLE events RENAME TO events_away")
        try:
            yield
        finally:
            self.execute("ALTER TABLE events_away RENAME TO events")

    def refuse_kind(self, kind: str) -> None:
        if self.sqlite:
            self.execute(
                f"CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.kind = '{kind}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
            )
        else:
            self.execute(f"ALTER TABLE events ADD CONSTRAINT refuse CHECK (kind <> '{kind}')")


# The SQL backends' writer, with outages and locks made in the database itself.
pytestmark = only("events_url", "sqlite", "postgresql")


@pytest.fixture
def url(events_url: str) -> str:
    return events_url


@pytest.fixture
def db(url: str) -> Database:
    return Database(url)


@pytest.fixture
def log(url: str) -> Iterator[EventLog]:
    with EventLog.from_url(url) as log:
        yield log


def _writer_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == WRITER_THREAD)


def test_an_outage_keeps_events_and_surfaces_the_error(
    log: EventLog, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    log.emit("run.started", durable=True)
    with db.outage():
        for i in range(100):
            log.emit("prediction", payload={"i": i})
        with pytest.raises(BackendError) as info:
            log.flush()
        assert "kept in memory" in str(info.value)
        with pytest.raises(BackendError):
            log.emit("gate.decided", durable=True)
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    log.flush()
    assert log.count() == 102  # nothing lost, nothing twice
    assert [e.payload["i"] for e in log.iter(kind="prediction")] == list(range(100))
    assert log.count(kind="gate.decided") == 1  # the failed durable write was kept


def test_refused_rows_are_isolated_kept_and_reported(log: EventLog, db: Database) -> None:
    log.emit("run.started", durable=True)
    db.refuse_kind("poison.pill")
    for i in range(40):
        log.emit("poison.pill" if i == 17 else "prediction", payload={"i": i})
    with pytest.raises(InvalidInputError) as info:
        log.flush()
    ((row, reason),) = log.rejected
    assert row["kind"] == "poison.pill"
    assert row["id"] in str(info.value)
    assert reason
    log.flush()  # reported once
    assert log.count(kind="prediction") == 39  # the rest of the batch was committed
    with pytest.raises(InvalidInputError):
        log.emit("poison.pill", durable=True)
    log.emit("prediction", durable=True)  # the log keeps working
    assert log.count(kind="prediction") == 40


def test_a_full_buffer_blocks_writers_until_there_is_room(url: str, db: Database) -> None:
    with EventLog.from_url(url, batch_size=10, max_buffer=20, flush_interval=0.01) as log:
        log.emit("run.started", durable=True)
        done = threading.Event()

        def produce() -> None:
            for i in range(200):
                log.emit("prediction", payload={"i": i})
            done.set()

        producer = threading.Thread(target=produce)
        with db.write_lock():
            producer.start()
            assert not done.wait(0.5)  # blocked: nothing can be committed
            assert log._writer.unwritten <= 20 + 10 + 1
        producer.join(60)
        assert done.is_set()
        log.flush()
        assert [e.payload["i"] for e in log.iter(kind="prediction")] == list(range(200))


def test_flush_times_out_while_the_database_is_locked(log: EventLog, db: Database) -> None:
    log.emit("run.started", durable=True)
    with db.write_lock():
        log.emit("prediction")
        with pytest.raises(TimeoutError):
            log.flush(timeout=0.2)
    log.flush()
    assert log.count() == 2


def test_close_during_an_outage_says_how_many_events_were_lost(url: str, db: Database) -> None:
    log = EventLog.from_url(url)
    log.emit("run.started", durable=True)
    with db.outage():
        for _ in range(5):
            log.emit("prediction")
        with pytest.raises(ClosedError) as info:
            log.close(timeout=10)
    assert "5 events not written" in str(info.value)
    assert log.closed
    log.close()  # idempotent, also after a failed close


def test_the_writer_thread_starts_on_first_write_and_stops_on_close(url: str) -> None:
    before = _writer_threads()
    log = EventLog.from_url(url)
    assert _writer_threads() == before  # opening starts no thread
    log.count()
    assert _writer_threads() == before  # neither does reading
    log.emit("run.started")
    assert _writer_threads() == before + 1
    log.close()
    assert _writer_threads() == before


def test_a_log_nobody_closed_is_flushed_at_interpreter_exit(url: str) -> None:
    script = (
        "import sys\n"
        "from conveyor.events import EventLog\n"
        "log = EventLog.from_url(sys.argv[1])\n"
        "for i in range(1000):\n"
        "    log.emit('exit.test', payload={'i': i})\n"
    )
    subprocess.run([sys.executable, "-c", script, url], check=True, timeout=120)
    with EventLog.from_url(url) as log:
        assert log.count(kind="exit.test") == 1000


def test_a_log_dropped_without_close_is_flushed_and_its_thread_stops(url: str) -> None:
    before = _writer_threads()
    log = EventLog.from_url(url)
    for i in range(100):
        log.emit("gc.test", payload={"i": i})
    del log
    gc.collect()
    assert _writer_threads() == before
    with EventLog.from_url(url) as reopened:
        assert reopened.count(kind="gc.test") == 100


def test_mutating_a_payload_after_emit_changes_nothing(log: EventLog) -> None:
    payload = {"n": 1}
    log.emit("prediction", payload=payload)
    payload["n"] = 2
    log.flush()
    assert log.latest(1)[0].payload == {"n": 1}


def test_health_reports_the_schema_revision(url: str) -> None:
    with EventLog.from_url(url, migrate=False) as fresh:
        fresh.ping()
        facts = fresh.health()
        assert facts["revision"] is None and facts["migrated"] is False
    with EventLog.from_url(url) as log:
        facts = log.health()
    assert facts["revision"] == facts["head"] == "0001"
    assert facts["migrated"] is True and facts["unwritten"] == 0
