"""Following on PostgreSQL, where a lower seq can commit after a higher one."""

from __future__ import annotations

import psycopg

from conveyor.events import Event, EventLog

_INSERT = (
    "INSERT INTO events (id, time_us, kind, subject, payload) "
    "VALUES (%s, %s, %s, %s, '{}'::jsonb) RETURNING seq"
)


def _insert_uncommitted(pg: psycopg.Connection[tuple[int]], event: Event) -> int:
    row = pg.execute(_INSERT, (event.id, event.time_us, event.kind, event.subject)).fetchone()
    assert row is not None
    return row[0]


def test_an_event_committed_late_behind_a_higher_seq_is_still_yielded(pg_url: str) -> None:
    with EventLog.from_url(pg_url) as log, psycopg.connect(pg_url) as pg:
        follower = log.follow(poll_interval=0.02, idle_timeout=30)
        late = Event("run.started", subject="late")
        late_seq = _insert_uncommitted(pg, late)  # holds seq n, not committed yet
        early = log.emit("run.finished", subject="early", durable=True)  # seq n + 1
        assert next(follower) == early
        pg.commit()
        assert next(follower) == late
        row = pg.execute("SELECT seq FROM events WHERE id = %s", (early.id,)).fetchone()
        assert row is not None
        assert late_seq < row[0]  # the late event really has the lower seq


def test_a_gap_older_than_the_late_window_is_given_up(pg_url: str) -> None:
    with EventLog.from_url(pg_url) as log, psycopg.connect(pg_url) as pg:
        follower = log.follow(poll_interval=0.02, idle_timeout=0.5, late_window=0)
        _insert_uncommitted(pg, Event("run.started", subject="too-late"))
        early = log.emit("run.finished", subject="early", durable=True)
        assert next(follower) == early
        pg.commit()
        assert list(follower) == []  # documented: later than late_window is missed
        assert log.count(subject="too-late") == 1  # but it is in the log
