"""On PostgreSQL a transaction can commit after one holding a higher seq: compaction never
moves its checkpoint past a seq that may still commit."""

from __future__ import annotations

import threading

import orjson
import pytest
from monitoring_support import copied_rows, log_rows, predictions, write

from conveyor.events.schema import Event
from conveyor.monitoring import compact
from conveyor.project import Project


@pytest.mark.parametrize("backends", ["postgresql"], indirect=True)
def test_postgres_commits_out_of_seq_order_are_waited_for_never_skipped(
    project: Project, backends: dict[str, str]
) -> None:
    """A transaction holding a lower seq commits after a higher one is visible: compaction
    waits for it, or, past the settle timeout, stops just before its seq, and copies it
    once it commits. Meanwhile queries count the later event from the log's tail."""
    import psycopg

    from conveyor.backends import BackendURL

    write(project, predictions(10))
    dsn = BackendURL.parse(backends["CONVEYOR_EVENTS"]).with_(driver=None)
    held = Event("prediction", subject="fraud", payload={"latency_ms": 1.0, "arm": "x"})
    late = Event("prediction", subject="fraud", payload={"latency_ms": 2.0, "arm": "x"})

    def insert_uncommitted(event: Event) -> psycopg.Connection:
        conn = psycopg.connect(dsn.render(hide_password=False))
        payload = orjson.dumps(event.payload).decode()
        conn.execute(
            "INSERT INTO events (id, time_us, kind, subject, payload) VALUES (%s, %s, %s, %s, %s)",
            (event.id, event.time_us, event.kind, event.subject, payload),
        )
        return conn

    # 1. The holder does not commit within the settle timeout: stop before its seq.
    conn = insert_uncommitted(held)
    write(project, [late])
    seqs = {r[1]: r[0] for r in log_rows(project)}
    done = compact(project, settle_timeout=0.2)
    assert done.last_seq == seqs[late.id] - 2  # the held seq sits right before late's
    assert late.id not in {r[1] for r in copied_rows(project)}
    conn.commit()
    conn.close()
    done = compact(project, settle_timeout=0.2)
    ids = [r[1] for r in copied_rows(project)]
    assert ids.count(held.id) == ids.count(late.id) == 1
    assert copied_rows(project) == log_rows(project, through=done.last_seq)

    # 2. The holder commits while compaction waits: one run copies both.
    held2 = Event("prediction", subject="fraud", payload={"latency_ms": 1.0})
    late2 = Event("prediction", subject="fraud", payload={"latency_ms": 2.0})
    conn = insert_uncommitted(held2)
    write(project, [late2])
    timer = threading.Timer(0.3, conn.commit)
    timer.start()
    done = compact(project, settle_timeout=30)
    timer.join()
    conn.close()
    assert done.events == 3  # and the previous run's monitoring.compacted
    assert copied_rows(project) == log_rows(project, through=done.last_seq)
    assert [r[3] for r in log_rows(project)[-1:]] == ["monitoring.compacted"]
