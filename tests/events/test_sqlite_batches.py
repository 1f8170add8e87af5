"""SQLite's event log writes a batch as a few multi-row INSERTs, not one per event.

``executemany`` stepped one statement per event, and the driver let go of the GIL
around each step and took it back after: a server's event loop was handed the GIL
and had it taken away once per event it had answered. Here the statements sent to
the database are counted, and what they stored is read back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.errors import BackendError
from conveyor.events import EventLog
from conveyor.events.sql import SqlEventLog, _chunk_rows
from fresh_python import run_python

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SqlEventLog]:
    # a long interval: the writer commits when the batch is full or at the flush
    opened = SqlEventLog.from_url(
        f"sqlite:///{tmp_path / 'events.db'}", batch_size=500, flush_interval=5.0
    )
    try:
        yield opened
    finally:
        opened.close()


def _inserts(log: SqlEventLog) -> list[int]:
    """Rows per INSERT the log's writer sends from now on (its own connection), in order;
    0 for a BEGIN and -1 for a COMMIT."""
    sent: list[int] = []

    def count(statement: str) -> None:
        if statement.startswith("INSERT INTO events"):
            sent.append(statement.count("), (") + 1)
        elif statement.startswith("BEGIN"):
            sent.append(0)
        elif statement.startswith("COMMIT"):
            sent.append(-1)

    assert log._batches is not None
    log._batches.connection().set_trace_callback(count)
    return sent


def test_a_batch_of_500_events_is_six_statements_in_order(log: SqlEventLog) -> None:
    sent = _inserts(log)
    emitted = [log.emit("test.batch", subject=f"s{i}", payload={"i": i}) for i in range(500)]
    log.flush(10)
    # one transaction around the chunks
    assert sent == [0, 256, 128, 64, 32, 16, 4, -1]
    stored = list(log.iter(kind="test.batch"))
    # every event, in the order emitted (the sequence follows the rows' order)
    assert [e.id for e in stored] == [e.id for e in emitted]
    assert [e.payload["i"] for e in stored] == list(range(500))
    assert [e.subject for e in stored] == [f"s{i}" for i in range(500)]


def test_a_flush_behind_a_full_batch_does_not_wait_for_the_interval(tmp_path: Path) -> None:
    # 500 events fill a batch and wake the writer; the flush's barrier lands behind
    # them as it wakes. It once waited for the next interval (here 60 s): the wake-up
    # it had signalled was cleared by the wake-up the full batch had caused
    log = SqlEventLog.from_url(
        f"sqlite:///{tmp_path / 'events.db'}", batch_size=500, flush_interval=60.0
    )
    try:
        for attempt in range(20):
            for i in range(500):
                log.emit("test.batch", payload={"attempt": attempt, "i": i})
            log.flush(10)  # TimeoutError if it waited for the interval
        assert log.count(kind="test.batch") == 20 * 500
    finally:
        log.close()


def test_an_event_appended_twice_in_one_batch_is_stored_once(log: SqlEventLog) -> None:
    first = log.emit("test.batch", payload={"n": 1})
    log.append_many([first, first, first])
    log.emit("test.batch", payload={"n": 2})
    log.flush(10)
    stored = list(log.iter(kind="test.batch"))
    assert [e.payload["n"] for e in stored] == [1, 2]
    assert stored[0].id == first.id


def test_a_lone_event_is_one_single_row_statement(log: SqlEventLog) -> None:
    sent = _inserts(log)
    log.emit("test.batch", payload={"n": 1})
    log.flush(10)
    # one statement, no BEGIN or COMMIT around it: SQLite commits it on its own
    assert sent == [1]
    assert isinstance(log, EventLog)


@pytest.mark.parametrize(
    ("limit", "rows"),
    [(32766, 256), (999, 64), (250_000, 256), (18, 2), (9, 1), (5, 1)],
)
def test_chunks_stay_within_sqlites_parameter_limit(limit: int, rows: int) -> None:
    # SQLite before 3.32 allowed 999 parameters a statement; 9 columns an event
    assert _chunk_rows(limit, 9) == rows
    assert rows * 9 <= max(limit, 9)


def test_a_writer_connection_that_fails_is_replaced_and_nothing_is_lost(
    log: SqlEventLog,
) -> None:
    # The writer thread owns one connection; closed behind its back, the next batch
    # fails (a database error, not the rows'), is kept, and the retry opens a new one
    log.emit("test.batch", payload={"n": 0}, durable=True)
    assert log._batches is not None
    broken = log._batches.connection()
    broken.close()
    for n in range(1, 6):
        log.emit("test.batch", payload={"n": n})
    with pytest.raises(BackendError, match="kept in memory and retried"):
        log.flush(10)  # the failed attempt, reported
    log.flush(10)
    assert [e.payload["n"] for e in log.iter(kind="test.batch")] == list(range(6))
    assert log._batches.connection() is not broken


def test_closing_the_log_closes_the_writers_connection(tmp_path: Path) -> None:
    log = SqlEventLog.from_url(f"sqlite:///{tmp_path / 'events.db'}")
    log.emit("test.batch", durable=True)
    assert log._batches is not None
    conn = log._batches.connection()
    log.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")


def test_a_small_batch_is_one_statement_a_larger_one_chunks_in_a_transaction(
    log: SqlEventLog,
) -> None:
    # up to 64 events: one INSERT of exactly those rows (a group commit's batch); beyond,
    # power-of-two chunks, so a busy server prepares a handful of statement texts
    sent = _inserts(log)
    for size in (3, 64, 65):
        for i in range(size):
            log.emit("test.batch", payload={"size": size, "i": i})
        log.flush(10)
    assert sent == [3, 64, 0, 64, 1, -1]
    assert log.count(kind="test.batch") == 3 + 64 + 65


_CLOSE_WHILE_STUCK = """
import sqlite3, sys, threading, time
from conveyor.errors import ClosedError
from conveyor.events.sql import SqlEventLog
path = sys.argv[1]
log = SqlEventLog.from_url(f"sqlite:///{path}")
log.emit("test.batch", durable=True)
holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
holder.execute("BEGIN IMMEDIATE")       # the writer's next INSERT waits on this lock
held, closed = threading.Event(), threading.Event()
def release():                            # once close() returned, or after 20 s at most
    closed.wait(20)
    held.clear()
    holder.execute("ROLLBACK")
held.set()
threading.Thread(target=release).start()
log.emit("test.batch")
time.sleep(0.3)                           # the writer is inside that INSERT
try:
    log.close(timeout=0.5)
except ClosedError as exc:
    print("closed:", exc.context["unwritten"], "lock still held:", held.is_set())
closed.set()
time.sleep(0.5)                           # the stuck statement ends on a closed log
print("alive")
"""


def test_closing_the_log_while_its_writer_is_stuck_on_a_lock_loses_only_that_batch(
    tmp_path: Path,
) -> None:
    # close() gives up waiting for the writer, stuck in a statement that waits for the
    # database's lock: it must return then (not when the statement's busy timeout ends,
    # as it did when it closed the writer's connection under that statement), the
    # process must not crash, and close says how many events it could not write.
    out = run_python(_CLOSE_WHILE_STUCK, str(tmp_path / "events.db"), timeout=60)
    assert out.split() == ["closed:", "1", "lock", "still", "held:", "True", "alive"]
