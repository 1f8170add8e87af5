"""The stream backends of the event log (NATS JetStream, Redis Streams) beyond the contract.

The contract itself runs on every backend in ``test_event_log_contract.py``. Each
test gets a stream of its own from the backend matrix (``events_url``: a fresh
name, its subjects or keys under a fresh prefix), dropped afterwards. A service
that is down fails the test with the command that starts it; nothing is skipped.
"""

from __future__ import annotations

import gc
import inspect
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor.backends import EVENTS, BackendURL
from conveyor.capability import EventKind
from conveyor.errors import (
    BackendUnavailableError,
    ClosedError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.events import Event, EventLog
from conveyor.events.nats import NatsEventLog
from conveyor.events.redis_stream import RedisStreamEventLog
from conveyor.testing.matrix import only
from conveyor.testing.services import on_nats

#: The tests below that are about the stream backends, on each of them.
STREAMS = only("events_url", "nats", "redis")


def _stream_of(url: str) -> str:
    return BackendURL.parse(url).path.strip("/")


def _redis(url: str) -> redis.Redis:
    parsed = BackendURL.parse(url)
    return redis.Redis(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 6379,
        db=int(parsed.path.strip("/") or 0),
        password=parsed.password,
    )


# -- opening ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["nats://127.0.0.1:1/events", "redis://127.0.0.1:1/15"])
def test_an_unreachable_service_is_named_by_host_and_port(url: str) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        EVENTS.open(url)
    assert "127.0.0.1:1" in str(info.value)
    assert info.value.context["port"] == 1


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("nats://127.0.0.1:4222/events?colour=red", "url"),
        ("nats://127.0.0.1:4222/not.a.stream", "url"),
        ("nats://127.0.0.1:4222/events?subject_prefix=ev.*", "subject_prefix"),
        ("nats://127.0.0.1:4222/events?duplicate_window=-1", "duplicate_window"),
        ("nats://127.0.0.1:4222/events?replicas=0", "replicas"),
        ("redis://127.0.0.1:6379/15?colour=red", "url"),
        ("redis://127.0.0.1:6379/fifteen", "url"),
        ("redis://127.0.0.1:6379/15?socket_timeout=soon", "socket_timeout"),
        ("redis://127.0.0.1:6379/15?stream=", "stream"),
    ],
)
def test_bad_url_options_are_refused(url: str, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        EVENTS.open(url)
    assert info.value.context["field"] == field


@pytest.mark.parametrize(
    "options", [{"batch_size": 0}, {"flush_interval": 0}, {"max_buffer": 10, "batch_size": 20}]
)
@STREAMS
def test_bad_writer_options_are_refused(events_url: str, options: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        EVENTS.open(events_url, **options)


@STREAMS
def test_the_stream_logs_are_event_logs(events_url: str) -> None:
    with EVENTS.open(events_url) as log:
        assert isinstance(log, EventLog)
        assert repr(log).endswith("open)")
    assert repr(log).endswith("closed)")


def test_every_backend_implements_every_read_of_the_interface() -> None:
    """EventLog holds the write path; the reads are abstract, so a backend lacking one
    cannot even be built (nothing falls back to SQL at run time)."""
    from conveyor.events.sql import SqlEventLog

    reads = {"query", "count", "follow", "erase", "health", "ping", "after_fork_in_child"}
    assert set(EventLog.__abstractmethods__) == reads
    for cls in (SqlEventLog, NatsEventLog, RedisStreamEventLog):
        assert not inspect.isabstract(cls), cls


# -- idempotency ----------------------------------------------------------------------------


@STREAMS
def test_a_retried_batch_is_stored_once(events_url: str) -> None:
    batch = [Event("data.row", subject="s", payload={"i": i}) for i in range(300)]
    with EVENTS.open(events_url) as first, EVENTS.open(events_url) as second:
        first.append_many(batch, durable=True)
        second.append_many(batch, durable=True)  # another process retrying the whole batch
        first.append_many(batch[100:200])  # a retry of part of it
        first.append(batch[-1], durable=True)
        first.flush()
        assert second.count() == 300
        assert list(second.iter()) == batch


@STREAMS
def test_record_writes_by_durability_and_spills_telemetry(events_url: str, tmp_path: Path) -> None:
    """The SQL log's write path, inherited: audit waits, telemetry never does."""
    tick = EventKind("test.tick", "telemetry", {"i": int}, "a test's telemetry")
    note = EventKind("test.note", "audit", {"text": str}, "a test's audit record")
    with EVENTS.open(events_url, spill_dir=tmp_path / "spill") as log:
        assert log.record(note, payload={"text": "hi"}) is not None
        assert log.count(kind="test.note") == 1  # audit: stored when record returns
        for i in range(50):
            assert log.record(tick, payload={"i": i}) is not None
        log.flush()
        assert [e.payload["i"] for e in log.iter(kind="test.tick")] == list(range(50))
        assert log.health()["spill_dir"] == str(tmp_path / "spill")


# -- NATS ------------------------------------------------------------------------------------


@only("events_url", "nats")
def test_nats_creates_a_file_stream_with_the_subjects_and_dedupes_by_event_id(
    events_url: str,
) -> None:
    name = _stream_of(events_url)
    prefix = BackendURL.parse(events_url).query["subject_prefix"]
    with pytest.raises(NotFoundError):
        EVENTS.open(events_url, migrate=False)  # missing, and not to be created
    with EVENTS.open(events_url) as log:
        event = log.emit("run.started", subject="fraud", durable=True)

    async def inspect_stream(js: Any) -> tuple[Any, Any]:
        return await js.stream_info(name), await js.get_msg(name, 1)

    info, msg = on_nats(inspect_stream)
    assert info.config.subjects == [f"{prefix}.>"]
    assert info.config.storage == "file"
    assert info.config.duplicate_window == 120
    assert msg.subject == f"{prefix}.run.started"
    assert msg.headers["Nats-Msg-Id"] == event.id
    with EVENTS.open(events_url, migrate=False) as reopened:  # exists now
        assert reopened.latest(1) == [event]


@only("events_url", "nats")
def test_nats_refuses_a_stream_that_has_other_subjects(events_url: str) -> None:
    with EVENTS.open(events_url):
        pass
    other = BackendURL.parse(events_url)
    other = other.with_(query={"subject_prefix": f"elsewhere.{_stream_of(events_url)}"})
    with pytest.raises(InvalidInputError) as info:
        EVENTS.open(other.render(hide_password=False))
    assert info.value.context["field"] == "subject_prefix"


@only("events_url", "nats")
def test_nats_a_stream_created_by_another_server_meanwhile_is_taken_as_ours(
    events_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two writers starting together on a fresh broker (the event log benchmark's two
    # processes) race to create the stream: the server created it for the other and told
    # this one "subjects overlap with an existing stream", and it refused to start. The
    # server's answer in that window is reproduced here: the stream really is created, then
    # the answer is that error.
    import nats.js.errors
    import nats.js.manager

    real = nats.js.manager.JetStreamManager.add_stream

    async def lost_the_race(self: Any, *args: Any, **kwargs: Any) -> Any:
        await real(self, *args, **kwargs)
        raise nats.js.errors.BadRequestError(
            code=400, err_code=10065, description="subjects overlap with an existing stream"
        )

    monkeypatch.setattr(nats.js.manager.JetStreamManager, "add_stream", lost_the_race)
    with EVENTS.open(events_url) as log:
        event = log.emit("run.step", durable=True)
    monkeypatch.undo()
    with EVENTS.open(events_url, migrate=False) as log:
        assert log.latest(1) == [event]


@only("events_url", "nats")
def test_nats_follow_goes_on_when_the_server_drops_its_consumer(events_url: str) -> None:
    name = _stream_of(events_url)

    async def drop_consumers(js: Any) -> int:
        consumers = await js.consumers_info(name)
        for consumer in consumers:
            await js.delete_consumer(name, consumer.name)
        return len(consumers)

    with EVENTS.open(events_url) as log:
        follower = log.follow(poll_interval=0.05, idle_timeout=30)
        first = log.emit("run.step", payload={"i": 1}, durable=True)
        assert next(follower) == first
        assert on_nats(drop_consumers) == 1
        second = log.emit("run.step", payload={"i": 2}, durable=True)
        assert next(follower) == second


@only("events_url", "nats")
def test_nats_refuses_an_event_larger_than_a_message_and_keeps_the_rest(events_url: str) -> None:
    with EVENTS.open(events_url) as log:
        small = log.emit("data.row", payload={"n": 1})
        large = log.emit("data.row", payload={"blob": "x" * 2_000_000})
        with pytest.raises(InvalidInputError) as info:
            log.flush()
        assert info.value.context["ids"] == [large.id]
        assert log.rejected[0][0]["id"] == large.id
        assert log.latest(5) == [small]


# -- Redis -------------------------------------------------------------------------------------


@only("events_url", "redis")
def test_redis_numbers_entries_and_keeps_every_one(events_url: str) -> None:
    stream = BackendURL.parse(events_url).query["stream"]
    with EVENTS.open(events_url, batch_size=100) as log:
        sent = [log.emit("data.row", payload={"i": i}) for i in range(1_000)]
        log.flush()
    client = _redis(events_url)
    try:
        entries = client.xrange(stream, count=3)
        assert [entry for entry, _ in entries] == [b"0-1", b"0-2", b"0-3"]
        assert client.xlen(stream) == 1_000  # no MAXLEN: nothing trimmed
        assert client.hget(f"{stream}:ids", sent[-1].id) == b"0-1000"
    finally:
        client.close()


# -- lifecycle -----------------------------------------------------------------------------


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("conveyor-events")}


@STREAMS
def test_an_unclosed_log_is_closed_when_garbage_collected(events_url: str) -> None:
    before = _threads()
    log = EVENTS.open(events_url, flush_interval=60)
    for i in range(100):
        log.emit("gc.test", payload={"i": i})
    assert _threads() > before
    del log
    gc.collect()
    assert _threads() == before  # the finalizer flushed and stopped every thread
    with EVENTS.open(events_url) as reopened:
        assert reopened.count(kind="gc.test") == 100


@STREAMS
def test_closing_a_log_under_its_follower_raises_closed(events_url: str) -> None:
    log = EVENTS.open(events_url)
    follower = log.follow(poll_interval=1.0, idle_timeout=30)
    log.emit("run.started", durable=True)
    assert next(follower).kind == "run.started"
    closer = threading.Timer(0.2, log.close)  # while the follower waits for the next one
    closer.start()
    with pytest.raises(ClosedError):
        next(follower)
    closer.join()
