"""How often the background writer commits: every ``flush_interval`` or as soon as a batch
is full, however long a commit takes.

The write here is a function that takes 20 ms (a slow disk's fsync) and records what it
was given: the pacing is the writer's own logic, the same over every backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from conveyor.errors import BackendError
from conveyor.events.writer import BatchWriter, Row


def _writer(batches: list[int], batch_size: int = 500) -> BatchWriter:
    def write(rows: Sequence[Row]) -> None:
        time.sleep(0.02)
        batches.append(len(rows))

    return BatchWriter(
        write,
        refused=lambda exc: False,
        describe=lambda exc, unwritten: BackendError(str(exc), seam="events"),
        batch_size=batch_size,
        flush_interval=0.1,
        max_buffer=10_000,
    )


def test_a_trickle_is_committed_once_an_interval_not_back_to_back() -> None:
    # Before: whatever arrived during a commit was committed at once, so a slow commit
    # kept the thread committing a few rows at a time (four times the commits, measured
    # on SQLite at 1,400 events/s), CPU a server's event loop shares.
    batches: list[int] = []
    writer = _writer(batches)
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 1.0:
        writer.put({"i": sent})
        sent += 1
        time.sleep(0.002)
    writer.close()
    assert sum(batches) == sent  # nothing lost
    # one commit per interval (0.1 s, plus the 20 ms commit): about 8 in the second;
    # back to back it was one every 20 ms, about 50
    assert len(batches) <= 15, batches
    assert max(batches) > 20  # each commit took what a whole interval brought


def test_a_full_batch_and_a_flush_do_not_wait_for_the_interval() -> None:
    batches: list[int] = []
    writer = _writer(batches, batch_size=50)
    writer.put_many([{"i": i} for i in range(120)])  # two full batches and a rest
    done = threading.Event()

    def flush() -> None:
        writer.flush()
        done.set()

    threading.Thread(target=flush).start()
    assert done.wait(5)
    assert batches[:2] == [50, 50] and sum(batches) == 120
    writer.close()
