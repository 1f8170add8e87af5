"""The events sink in one process: rejected messages, redelivered batches, its status
(CLI and metrics) and its errors. The kill tests are in ``test_sink_kill.py``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sink_support import CONVEYOR, NatsServer, parquet_ids, sql_ids

from conveyor.errors import BackendUnavailableError, InvalidInputError
from conveyor.events import EventLog
from conveyor.monitoring.sink import Sink
from conveyor.project import Project, init_project
from conveyor.testing.wait import wait_until

KIND = "test.sink"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def source(broker: NatsServer, request: pytest.FixtureRequest) -> str:
    return f"{broker.url}/S{abs(hash(request.node.name)) % 10**8}"


def _write(source: str, n: int) -> set[str]:
    with EventLog.from_url(source) as log:
        ids = {log.emit(KIND, subject="m", payload={"i": i}).id for i in range(n)}
        log.flush()
    return ids


def _ours(counts: dict[str, int], ids: set[str]) -> dict[str, int]:
    return {i: n for i, n in counts.items() if i in ids}


def test_a_drained_stream_is_in_both_stores_once_and_acked(project: Project, source: str) -> None:
    ids = _write(source, 3_000)
    with Sink.open(project, source=source, interval_s=0.2, batch_events=1_000) as sink:
        stats = sink.run(idle_exit_s=1.0)
        status = sink.status()
    assert stats.stopped == "idle"
    assert (stats.inserted, stats.skipped, stats.acked) == (3_000, 0, 3_000)
    assert stats.batches >= 3  # batch_events bounds what is held
    assert _ours(sql_ids(project), ids) == dict.fromkeys(ids, 1)
    assert _ours(parquet_ids(project), ids) == dict.fromkeys(ids, 1)
    assert status["acked_seq"] == status["stream_last_seq"] == 3_000
    assert status["lag"] == 0
    assert status["parquet"]["last_seq"] >= 3_000


def test_a_batch_delivered_again_adds_nothing(project: Project, source: str) -> None:
    """The consumer deleted after a run: everything comes again; the SQL log skips it and
    the Parquet copy is unchanged."""
    ids = _write(source, 500)
    with Sink.open(project, source=source, interval_s=0.2) as sink:
        sink.run(idle_exit_s=0.8)
        sink.reader.delete()  # the next fetch makes it afresh, from the stream's start
        again = sink.run(idle_exit_s=0.8)
    assert (again.inserted, again.skipped) == (500, 500)  # since the sink started
    assert _ours(sql_ids(project), ids) == dict.fromkeys(ids, 1)
    assert _ours(parquet_ids(project), ids) == dict.fromkeys(ids, 1)


def test_a_message_that_is_not_an_event_is_kept_with_its_reason(
    project: Project, broker: NatsServer, source: str
) -> None:
    ids = _write(source, 10)
    stream = source.rsplit("/", 1)[1]

    async def garbage() -> None:
        import nats

        nc = await nats.connect(broker.url)
        try:
            js = nc.jetstream()
            await js.publish(f"{stream}.prediction", b"not json")
            await js.publish(f"{stream}.prediction", b'{"id": "x", "kind": "prediction"}')
        finally:
            await nc.close()

    asyncio.run(garbage())
    later = _write(source, 10)
    with Sink.open(project, source=source, interval_s=0.2) as sink:
        stats = sink.run(idle_exit_s=0.8)
        status = sink.status()
    assert stats.rejected == 2
    assert status["lag"] == 0 and status["rejected"] == 2  # acked, and kept
    kept = project.events.query(kind="monitoring.sink_rejected").items
    assert sorted(e.payload["seq"] for e in kept) == [11, 12]
    assert all(e.payload["stream"] == stream and e.payload["reason"] for e in kept)
    assert "JSONDecodeError" in kept[0].payload["reason"]
    assert _ours(sql_ids(project), ids | later) == dict.fromkeys(ids | later, 1)


def test_status_and_metrics_show_the_position_and_the_lag(
    project: Project, pg_env: dict[str, str], source: str
) -> None:
    _write(source, 200)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}, **pg_env}
    status = [CONVEYOR, "events", "sink", "-C", str(project.root), "--source", source]

    def cli(*args: str) -> dict[str, object]:
        done = subprocess.run([*status, *args, "--json"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    before = cli("--status")
    assert before["exists"] is False and before["lag"] == 200

    stop = threading.Event()
    with Sink.open(project, source=source, interval_s=0.2, metrics_port=0) as sink:
        assert sink.metrics is not None
        thread = threading.Thread(target=sink.run, args=(stop,))
        thread.start()
        try:
            deadline = 200
            url = f"http://127.0.0.1:{sink.metrics.port}/metrics"
            for _ in range(100):
                text = urllib.request.urlopen(url, timeout=5).read().decode()
                if f"conveyor_events_sink_acked_seq {deadline}.0" in text:
                    break
                stop.wait(0.1)
            assert f"conveyor_events_sink_acked_seq {deadline}.0" in text
            assert 'conveyor_events_sink_events_total{outcome="inserted"} 200.0' in text
            assert "conveyor_events_sink_lag" in text
        finally:
            stop.set()
            thread.join(30)
    after = cli("--status")
    assert after["acked_seq"] == after["stream_last_seq"] == 200
    assert after["lag"] == 0
    assert after["parquet"]["last_seq"] >= 200  # type: ignore[index]
    text = subprocess.run([*status, "--status"], env=env, capture_output=True, text=True)
    assert "acked through seq 200 of 200; lag 0" in text.stdout, text.stderr


def test_an_unreachable_broker_is_named_by_its_url(project: Project) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        Sink.open(project, source="nats://127.0.0.1:1/EV")
    assert "127.0.0.1:1" in str(info.value)


@pytest.mark.parametrize(
    ("source", "field"),
    [
        (None, "source"),  # no --source and no monitoring.sink.source
        ("redis://127.0.0.1:6379/15?stream=x", "source"),
    ],
)
def test_a_missing_or_wrong_source_is_refused(
    project: Project, source: str | None, field: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        Sink.open(project, source=source)
    assert info.value.context["field"] == field


def test_a_project_whose_own_log_is_on_the_broker_is_refused(
    tmp_path: Path, pg_env: dict[str, str], source: str
) -> None:
    root = tmp_path / "onbroker"
    init_project(root, name="b")
    env = {**pg_env, "CONVEYOR_EVENTS": source}
    with Project.open(root, env=env) as proj, pytest.raises(InvalidInputError) as info:
        Sink.open(proj, source=source)
    assert info.value.context["field"] == "events"


def test_bad_settings_are_refused(project: Project, source: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Sink.open(project, source=source, batch_events=0)
    assert info.value.context["field"] == "batch_events"
    with pytest.raises(InvalidInputError) as info:
        Sink.open(project, source=source, durable="has.dots")
    assert info.value.context["field"] == "durable"


def test_a_project_on_sqlite_takes_the_events_too(tmp_path: Path, source: str) -> None:
    """The embedded default: the same sink into SQLite and the Parquet copy (the insert
    path without COPY), a batch delivered again skipped there too."""
    root = tmp_path / "lite"
    init_project(root, name="lite")
    ids = _write(source, 700)
    with Project.open(root) as proj, Sink.open(proj, source=source, interval_s=0.2) as sink:
        sink.run(idle_exit_s=0.8)
        sink.reader.delete()
        stats = sink.run(idle_exit_s=0.8)
        assert (stats.inserted, stats.skipped) == (700, 700)
        assert _ours(sql_ids(proj), ids) == dict.fromkeys(ids, 1)
        assert _ours(parquet_ids(proj), ids) == dict.fromkeys(ids, 1)


def test_messages_fetched_ahead_are_handed_back_at_close(source: str) -> None:
    """A reader closed with messages it fetched ahead (prefetch) and never returned NAKs
    them: the next reader gets them at once, not after ack_wait."""
    _write(source, 300)
    with EventLog.from_url(source) as log:
        first = log.durable("ahead", ack_wait=60)  # type: ignore[attr-defined]
        taken = first.fetch(100, 1.0, prefetch=200)
        assert len(taken) == 100
        first.ack(taken)
        first.close()  # the 200 asked for ahead arrive meanwhile, none taken
        second = log.durable("ahead", ack_wait=60)  # type: ignore[attr-defined]
        rest = second.fetch(500, 2.0)
        assert sorted(d.seq for d in rest) == list(range(101, 301))
        assert all(d.delivered == 2 for d in rest)  # delivered before, handed back
        second.ack(rest)
        # acks are published, not awaited: the server counts them a moment later (a loaded
        # machine once read the consumer's state before 173 of them were processed)
        wait_until(lambda: second.info()["lag"] == 0, message="acked messages still pending")
        second.close()
