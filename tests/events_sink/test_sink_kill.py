"""Nothing acknowledged is lost: a broker SIGKILLed and started again mid-stream, a sink
killed with SIGKILL mid-batch, and every event the writer saw acknowledged is in
PostgreSQL once and in the Parquet copy once.

Real processes: a nats-server of the test's own (another port, its own store folder),
``conveyor events sink`` as a child process, the real ``EventLog`` on ``nats://`` writing
in the test process, PostgreSQL in a fresh schema.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sink_support import (
    NatsServer,
    files_on_disk,
    listed_files,
    parquet_ids,
    sink_process,
    sql_ids,
    wait_until,
)

from conveyor.events import EventLog
from conveyor.monitoring.sink import sink_checkpoint
from conveyor.project import Project

KIND = "test.sink"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _consumer(source: str) -> dict[str, Any]:
    from conveyor.backends import EVENTS

    with EVENTS.open(source) as log:
        return log.durable("conveyor-sink").info()  # type: ignore[attr-defined,no-any-return]


def _ours(counts: dict[str, int], ids: set[str]) -> dict[str, int]:
    return {i: n for i, n in counts.items() if i in ids}


class Producer(threading.Thread):
    """Emits ``n`` events through the real nats:// event log in chunks, flushing after
    each: every event emitted before a flush that returned is acknowledged. Paced (a chunk
    every ``pause`` seconds at most): the stream must still be flowing when the test kills
    the sink mid-batch; unpaced, a quiet machine wrote all 24,000 in about a second and the
    sink had caught up before the test could catch it holding a batch."""

    def __init__(self, url: str, n: int, chunk: int = 500, pause: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.url, self.n, self.chunk, self.pause = url, n, chunk, pause
        self.emitted: list[str] = []
        self.acknowledged = 0  # a prefix of emitted
        self.failed_flushes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with EventLog.from_url(self.url) as log:
                for start in range(0, self.n, self.chunk):
                    for i in range(start, min(start + self.chunk, self.n)):
                        event = log.emit(KIND, subject="m", payload={"i": i, "latency_ms": 1.5})
                        self.emitted.append(event.id)
                    count = len(self.emitted)
                    try:
                        log.flush(timeout=15)
                        self.acknowledged = count
                    except Exception:
                        self.failed_flushes += 1
                    time.sleep(self.pause)
                log.flush(timeout=60)  # the broker is back: everything is acknowledged
                self.acknowledged = len(self.emitted)
        except BaseException as exc:
            self.error = exc


@pytest.mark.slow
def test_every_acknowledged_event_lands_once_across_a_broker_restart_and_sink_kills(
    project: Project, pg_env: dict[str, str], broker: NatsServer, tmp_path: Path
) -> None:
    source = f"{broker.url}/EVSINK"
    args = ("--source", source, "--interval", "0.5", "--ack-wait", "3", "--batch-events", "3000")
    log = tmp_path / "sink.log"
    sink = sink_process(project, pg_env, *args, log=log)
    producer = Producer(source, 24_000)
    producer.start()
    try:
        # The broker dies (SIGKILL) with events in flight, and comes back on its store.
        # The sink is consuming first: one that starts while the broker is down exits at
        # once (unreachable), which a loaded machine's slow start-up made it do here.
        wait_until(
            lambda: _ours(sql_ids(project), set(producer.emitted)),
            90,
            "the sink storing the first events",
        )
        wait_until(lambda: producer.acknowledged >= 6_000, 60, "6,000 events acknowledged")
        broker.kill()
        time.sleep(1.0)
        broker.start()

        # The sink dies (SIGKILL) holding a batch in PostgreSQL that it has not acked yet.
        wait_until(lambda: producer.acknowledged >= 12_000, 90, "12,000 events acknowledged")

        def holding() -> bool:
            # rows in PostgreSQL not yet in the Parquet copy are the held batch (stored,
            # not acked)
            stored = len(sql_ids(project))
            copied = sink_checkpoint(project)["events"]
            return _consumer(source)["ack_pending"] > 0 and stored > copied + 100

        wait_until(holding, 60, "the sink holding an unacked batch in PostgreSQL", step=0.05)
        sink.send_signal(signal.SIGKILL)
        assert sink.wait(10) == -signal.SIGKILL
        sink = sink_process(project, pg_env, *args, log=log)

        # And once more, at whatever moment it is in.
        time.sleep(1.3)
        sink.send_signal(signal.SIGKILL)
        sink.wait(10)
        sink = sink_process(project, pg_env, *args, log=log)

        producer.join(180)
        assert producer.error is None, producer.error
        assert not producer.is_alive()
        emitted = set(producer.emitted)
        assert producer.acknowledged == len(producer.emitted) == len(emitted) == 24_000

        def drained() -> bool:
            info = _consumer(source)
            return info["lag"] == 0 and info["acked_seq"] == info["stream_last_seq"]

        wait_until(drained, 120, "the sink to ack the whole stream", step=0.25)
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait(10)

    in_sql = _ours(sql_ids(project), emitted)
    in_parquet = _ours(parquet_ids(project), emitted)
    assert set(in_sql) == emitted, f"{len(emitted - set(in_sql))} acknowledged events missing"
    assert set(in_sql.values()) == {1}
    assert set(in_parquet) == emitted, f"{len(emitted - set(in_parquet))} missing in Parquet"
    assert set(in_parquet.values()) == {1}, "an event is in the Parquet copy twice"
    # What the killed sinks left on disk was removed; every file on disk is listed.
    assert files_on_disk(project) == listed_files(project)
    # The kill mid-batch cost redeliveries (the SQL log skipped them): more deliveries
    # than messages.
    info = _consumer(source)
    assert info["deliveries"] > info["stream_last_seq"]


def test_sigterm_finishes_the_held_batch_then_exits_0(
    project: Project, pg_env: dict[str, str], broker: NatsServer, tmp_path: Path
) -> None:
    """With a long interval the sink holds what it stored; SIGTERM writes the Parquet file
    and acks before it exits, so nothing comes again."""
    source = f"{broker.url}/EVTERM"
    with EventLog.from_url(source) as log:
        ids = {log.emit(KIND, payload={"i": i}).id for i in range(2_000)}
        log.flush()
    out = tmp_path / "sink.log"
    sink = sink_process(project, pg_env, "--source", source, "--interval", "600", log=out)
    try:
        wait_until(lambda: len(_ours(sql_ids(project), ids)) == 2_000, 60, "the batch stored")
        info = _consumer(source)
        assert info["acked_seq"] == 0 and info["ack_pending"] == 2_000  # held, not acked
        assert not _ours(parquet_ids(project), ids)
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(30) == 0, out.read_text()[-3000:]
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait(10)
    info = _consumer(source)
    assert info["acked_seq"] == 2_000 and info["lag"] == 0
    assert _ours(parquet_ids(project), ids) == dict.fromkeys(ids, 1)
    assert "stopped (stop)" in out.read_text()
