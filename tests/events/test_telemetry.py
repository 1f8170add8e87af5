"""Telemetry apart from audit: the catalogue, payload checks, and a write path that never
makes a request wait (spill to local segments, or shed and count) while audit waits for
its commit. The sink is made to fall behind for real: another connection holds SQLite's
write lock."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor.capability import EventKind
from conveyor.errors import InvalidInputError
from conveyor.events.catalogue import check_payload, kind, kinds
from conveyor.events.log import EventLog

TICK = EventKind("test.tick", "telemetry", {"i": int}, "a test's telemetry")
NOTE = EventKind(
    "test.note", "audit", {"text": str, "by": (str, type(None))}, optional=frozenset({"by"})
)


def test_the_catalogue_holds_every_capabilitys_kinds_once() -> None:
    found = kinds()
    for name in ("run.started", "project.initialized"):
        assert found[name].durability in ("audit", "control")
    assert all(k.durability in ("audit", "control", "telemetry") for k in found.values())
    with pytest.raises(InvalidInputError, match=r"'no\.such' is not in the catalogue"):
        kind("no.such")


def test_payloads_are_checked_against_their_kind() -> None:
    check_payload(NOTE, {"text": "hi"})  # an optional field may be missing
    with pytest.raises(InvalidInputError, match="unknown payload field 'txt'; fields: text, by"):
        check_payload(NOTE, {"txt": "hi"})
    with pytest.raises(InvalidInputError, match="payload lacks text"):
        check_payload(NOTE, {"by": "x"})
    with pytest.raises(InvalidInputError, match="'text' is a int, expected str"):
        check_payload(NOTE, {"text": 3})
    with pytest.raises(InvalidInputError, match="expected str or None"):
        check_payload(NOTE, {"text": "t", "by": 3})


def _lock(path: Path) -> sqlite3.Connection:
    """Another connection holding the database's write lock: the log's writer falls behind."""
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_telemetry_spills_while_the_sink_is_behind_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    spill = tmp_path / "spill"
    with EventLog.from_url(
        f"sqlite:///{db}", batch_size=10, max_buffer=20, flush_interval=0.01, spill_dir=spill
    ) as log:
        log.record(TICK, payload={"i": -1})
        log.flush()
        holder = _lock(db)
        started = time.perf_counter()
        recorded = [log.record(TICK, payload={"i": i}) for i in range(500)]
        elapsed = time.perf_counter() - started
        assert all(e is not None for e in recorded)  # nothing shed: it spilled
        stats = log.stats()
        assert stats["spilled"] >= 400 and stats["shed"] == 0, stats
        assert list(spill.glob("*.jsonl")), "the overflow is on disk"
        # The writer is stuck on the lock, yet the 500 calls never waited for it.
        assert elapsed < 2.0, elapsed
        holder.rollback()
        holder.close()
        log.flush(timeout=60)
        log.load_spilled(timeout=60)
        assert sorted(e.payload["i"] for e in log.iter(kind="test.tick")) == list(range(-1, 500))
        assert not list(spill.glob("*.jsonl"))
        assert log.stats()["replayed"] == stats["spilled"]


def test_without_a_spill_folder_telemetry_is_shed_and_counted(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with EventLog.from_url(
        f"sqlite:///{db}", batch_size=10, max_buffer=20, flush_interval=0.01
    ) as log:
        log.record(TICK, payload={"i": 0})
        log.flush()
        holder = _lock(db)
        answers = [log.record(TICK, payload={"i": i}) for i in range(1, 200)]
        shed = answers.count(None)
        assert shed > 0 and log.stats()["shed"] == shed
        holder.rollback()
        holder.close()
        log.flush(timeout=60)
        kept = log.count(kind="test.tick")
        assert kept + shed == 200  # every event is either stored or counted as shed


def test_audit_waits_for_its_commit(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with EventLog.from_url(f"sqlite:///{db}", spill_dir=tmp_path / "spill") as log:
        event = log.record(NOTE, subject="ops", payload={"text": "rotated the key"})
        assert event is not None
        other = sqlite3.connect(db)
        try:  # visible to another connection the moment record() returned
            rows = other.execute("SELECT kind FROM events WHERE id = ?", (event.id,)).fetchall()
        finally:
            other.close()
        assert rows == [("test.note",)]
        with pytest.raises(InvalidInputError, match="unknown payload field"):
            log.record(NOTE, payload={"txt": "typo"})


_SPILLER = """
import sys, time
from conveyor.capability import EventKind
from conveyor.events.log import EventLog
TICK = EventKind("test.tick", "telemetry", {"i": int})
log = EventLog.from_url(sys.argv[1], batch_size=10, max_buffer=20, flush_interval=0.01,
                        spill_dir=sys.argv[2])
for i in range(300):
    assert log.record(TICK, payload={"i": i}) is not None
print(log.stats()["spilled"], flush=True)
time.sleep(60)  # alive, its segments unloaded, until the test kills it (the case under test)
"""


def test_segments_of_a_killed_process_are_loaded_by_its_successor(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    spill = tmp_path / "spill"
    EventLog.from_url(f"sqlite:///{db}").close()  # the table exists
    holder = _lock(db)
    child = subprocess.Popen(
        [sys.executable, "-c", _SPILLER, f"sqlite:///{db}", str(spill)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        spilled = int(child.stdout.readline())
        assert spilled > 250
    finally:
        os.kill(child.pid, signal.SIGKILL)  # no chance to load its segments itself
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
        holder.rollback()
        holder.close()
    assert list(spill.glob(f"{child.pid}-*.jsonl"))
    with EventLog.from_url(f"sqlite:///{db}", spill_dir=spill) as successor:
        successor.load_spilled(timeout=60)
        stored = sorted(e.payload["i"] for e in successor.iter(kind="test.tick"))
    # Everything the child spilled is there, once (what was still in its memory died with it).
    assert len(stored) == len(set(stored)) >= spilled
    assert not list(spill.glob("*.jsonl"))
