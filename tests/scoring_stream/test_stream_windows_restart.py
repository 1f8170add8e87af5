"""Windows on the real NATS: a consumer SIGKILLed mid-stream and started again gives the
same window results as one that never stopped, each published once, none late."""

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
from stream_support import make_project, predict, rows

from conveyor.scoring.stream.windows import Window, Windows

pytestmark = pytest.mark.slow
Streams = Any  # stream_support.Streams or RedisStreams

_WINDOWS = [
    Window("tumbling", 100, allowed_lateness=200),
    Window("sliding", 100, slide=50, field="f0", allowed_lateness=200),
    Window("session", 30, allowed_lateness=200),
]

_CHILD = textwrap.dedent(
    """
    import sys, time
    from conveyor.project import Project
    from conveyor.scoring.stream import score_stream
    from conveyor.scoring.stream.sinks import TableSink
    from conveyor.scoring.stream.windows import Window

    root, source, prefix, table, slow = sys.argv[1:6]

    class Slow(TableSink):
        def write(self, records):
            time.sleep(float(slow))
            super().write(records)

    windows = [
        Window("tumbling", 100, allowed_lateness=200),
        Window("sliding", 100, slide=50, field="f0", allowed_lateness=200),
        Window("session", 30, allowed_lateness=200),
    ]
    with Project.open(root) as project:
        result = score_stream(
            project, "lr@1", source=source, sinks=[Slow(table, "scores")],
            dead_letter=prefix + ".dlq", windows=windows, window_target=prefix + ".windows",
            late=prefix + ".late", key_field="user", time_field="ts", batch=20,
            idle_timeout=4,
        )
        print(result.stats.windows, flush=True)
    """
)


def _child(root: Path, streams: Streams, durable: str, table: str, slow: float) -> Any:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(root),
            streams.url(durable=durable, ack_wait=2),
            streams.prefix,
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
    except sqlite3.OperationalError:
        return 0


def test_window_state_survives_a_kill_and_every_window_is_published_once(
    tmp_path: Path, streams: Streams
) -> None:
    root = tmp_path / "proj"
    project = make_project(root)
    n = 600
    events = [{**r, "ts": 1_700_000_000 + 2 * r["n"]} for r in rows(n, users=7)]
    predictions = predict(project, events)
    project.close()
    streams.publish(events)
    durable = f"w{streams.name}"  # the state's key carries the test's token
    db = tmp_path / "scores.db"
    first = _child(root, streams, durable, f"sqlite:///{db}", slow=0.03)
    deadline = time.monotonic() + 60
    while _count(db) < 200 and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert _count(db) < n
    time.sleep(2.5)  # its unacked batch is due again (ack_wait 2 s): delivered first
    second = _child(root, streams, durable, f"sqlite:///{db}", slow=0)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err

    # the same events folded by one consumer that never stopped
    expected = Windows(_WINDOWS, name="x", target="w", late_target="l")
    scored = [
        {
            "id": streams.ids[i],
            "key": e["user"],
            "time": float(e["ts"]),
            "prediction": p,
            "f0": e["f0"],
        }
        for i, (e, p) in enumerate(zip(events, predictions, strict=True))
    ]
    fired, late = expected.apply(scored)
    assert late == [] and len(fired) > 20
    published = streams.read("windows")
    ids = [w["id"] for w in published]
    assert len(ids) == len(set(ids))  # each window once
    got = {w["id"]: (w["count"], round(w["sum"], 9)) for w in published}
    assert got == {w["id"]: (w["count"], round(w["sum"], 9)) for w in fired}
    assert streams.read("late") == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(DISTINCT id), count(*) FROM scores").fetchone() == (n, n)
