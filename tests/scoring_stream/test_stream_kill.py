"""A consumer killed with SIGKILL mid-stream, then started again: every message is in the
sinks (the output subject and a table) exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from stream_support import make_project, rows

pytestmark = pytest.mark.slow
Streams = Any  # stream_support.Streams or RedisStreams

_CHILD = textwrap.dedent(
    """
    import sys, time
    from conveyor.project import Project
    from conveyor.scoring.stream import score_stream
    from conveyor.scoring.stream.sinks import TableSink

    root, source, output, dlq, table, slow = sys.argv[1:7]

    class Slow(TableSink):
        def write(self, records):
            time.sleep(float(slow))  # slow enough to be killed between write and ack
            super().write(records)

    with Project.open(root) as project:
        result = score_stream(
            project, "lr@1", source=source, output=output, dead_letter=dlq,
            sinks=[Slow(table, "scores")], batch=25, idle_timeout=4,
        )
        print(result.stats.scored, flush=True)
    """
)


def _child(root: Path, streams: Streams, table: str, slow: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(root),
            streams.url(ack_wait=2),
            streams.target("scores"),
            streams.target("dlq"),
            table,
            str(slow),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM scores").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_a_consumer_killed_mid_stream_loses_nothing_and_doubles_nothing(
    tmp_path: Path, streams: Streams
) -> None:
    root = tmp_path / "proj"
    make_project(root).close()
    n = 1500
    streams.publish(rows(n))
    db = tmp_path / "scores.db"
    table = f"sqlite:///{db}"
    first = _child(root, streams, table, slow=0.02)
    deadline = time.monotonic() + 60
    while _count(db) < 300 and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)  # reaped, its pipes closed
    written_before = _count(db)
    assert 300 <= written_before < n  # killed mid-stream
    second = _child(root, streams, table, slow=0)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    # the second consumer scored the rest, and again what was written but not acked
    assert int(out.split()[-1]) >= n - written_before
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM scores")]
    assert len(ids) == len(set(ids)) == n
    published = [s["id"] for s in streams.read("scores")]
    assert len(published) == len(set(published)) == n  # JetStream dropped the second copies
    assert set(published) == set(ids) == set(streams.ids)
    assert streams.settled() == (0, 0)
