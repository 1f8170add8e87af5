"""A forked child that inherits an open event log (server workers, multiprocessing),
on every backend of the matrix."""

from __future__ import annotations

import multiprocessing

import pytest

from conveyor.backends import EVENTS
from conveyor.events import EventLog

_inherited: EventLog | None = None


def _child_writes(count: int) -> None:
    log = _inherited
    assert log is not None
    # The parent's buffered events are the parent's to write.
    assert log._writer.unwritten == 0, log._writer.unwritten
    assert log.count(kind="parent.durable") == 1  # a connection of the child's own works
    for i in range(count):
        log.emit("child.event", payload={"i": i})
    # No close: multiprocessing ends fork children with os._exit, which skips
    # atexit; the log's multiprocessing finalizer must flush anyway.


# Forking a process with threads is exactly the case under test (Python 3.12+ warns).
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
def test_a_forked_child_gets_its_own_connection_and_buffer(events_url: str) -> None:
    global _inherited
    log: EventLog
    with EVENTS.open(events_url, flush_interval=60) as log:
        log.emit("parent.durable", durable=True)  # threads running, a pooled connection
        for i in range(300):
            log.emit("parent.buffered", payload={"i": i})  # still in memory at the fork
        _inherited = log
        try:
            ctx = multiprocessing.get_context("fork")
            children = [ctx.Process(target=_child_writes, args=(200,)) for _ in range(2)]
            for child in children:
                child.start()
            for child in children:
                child.join(60)
        finally:
            _inherited = None
        assert [c.exitcode for c in children] == [0, 0]
        log.emit("parent.after", durable=True)  # the parent's thread and pool still work
        log.flush()
        assert log.count(kind="child.event") == 400
        assert log.count(kind="parent.buffered") == 300
        assert log.count() == 1 + 300 + 400 + 1
