"""The event log contract: every backend of the ``events`` seam passes it.

Subclass :class:`EventLogContract` in a test module and provide one fixture,
``events_url``: a URL string pointing at an empty database::

    class TestSqliteEventLog(EventLogContract):
        @pytest.fixture
        def events_url(self, tmp_path) -> str:
            return f"sqlite:///{tmp_path}/events.db"

The suite opens logs itself (``EVENTS.open(events_url)``), often several on
one URL, as separate processes and services would.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from conveyor.backends import EVENTS, BackendURL
from conveyor.errors import ClosedError, InvalidInputError, NotFoundError
from conveyor.events import Event, EventLog

__all__ = ["EventLogContract", "emit_from_process"]

_PROCESSES = 3
_PER_PROCESS = 2_000


def _open(url: str, **options: Any) -> EventLog:
    log: EventLog = EVENTS.open(url, **options)
    return log


def emit_from_process(url: str, tag: str, count: int, start: Any) -> None:
    """Run in a child process: open the log, wait for the others, write ``count`` events."""
    with _open(url) as log:
        start.wait()
        for i in range(count):
            log.emit("load.written", subject=tag, payload={"i": i})


class EventLogContract:
    """Behaviour every event log backend must show. Needs the fixture ``events_url``."""

    @pytest.fixture
    def log(self, events_url: str) -> Iterator[EventLog]:
        with _open(events_url) as log:
            yield log

    # -- durability and visibility ----------------------------------------------

    def test_durable_event_is_visible_to_another_log_when_emit_returns(
        self, events_url: str, log: EventLog
    ) -> None:
        with _open(events_url) as reader:
            event = log.emit(
                "gate.decided", subject="fraud", payload={"passed": True}, durable=True
            )
            assert reader.latest(1) == [event]

    def test_non_durable_events_are_visible_after_flush(
        self, events_url: str, log: EventLog
    ) -> None:
        sent = [log.emit("prediction", subject="m", payload={"i": i}) for i in range(50)]
        log.flush()
        with _open(events_url) as reader:
            assert list(reader.iter()) == sent

    def test_close_commits_everything_buffered(self, events_url: str) -> None:
        with _open(events_url) as log:
            for i in range(10_000):
                log.emit("prediction", payload={"i": i})
        with _open(events_url) as reopened:
            assert reopened.count() == 10_000
            assert reopened.count(kind="prediction") == 10_000

    def test_three_processes_write_at_once(self, events_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Event()
        procs = [
            ctx.Process(target=emit_from_process, args=(events_url, f"p{n}", _PER_PROCESS, start))
            for n in range(_PROCESSES)
        ]
        for proc in procs:
            proc.start()
        start.set()
        for proc in procs:
            proc.join(120)
        assert [proc.exitcode for proc in procs] == [0] * _PROCESSES
        with _open(events_url) as log:
            stored = list(log.iter())
        assert len(stored) == _PROCESSES * _PER_PROCESS
        assert len({e.id for e in stored}) == len(stored)
        for n in range(_PROCESSES):
            mine = [e.payload["i"] for e in stored if e.subject == f"p{n}"]
            assert mine == list(range(_PER_PROCESS))  # each process's order is kept

    def test_migrations_are_idempotent(self, events_url: str) -> None:
        with _open(events_url) as first:
            first.emit("run.started", durable=True)
        with _open(events_url) as second:
            assert second.count() == 1

    def test_append_is_idempotent_by_id(self, log: EventLog) -> None:
        event = Event("artifact.stored", subject="model.pkl", payload={"bytes": 10})
        log.append(event, durable=True)
        log.append(event, durable=True)
        log.append_many([event, event])
        log.flush()
        assert log.count() == 1
        assert log.latest(5) == [event]

    # -- reading ----------------------------------------------------------------

    def test_filters_by_exact_kind_and_prefix(self, log: EventLog) -> None:
        for kind in ("run.started", "run.step.done", "run.finished", "runner.started", "run"):
            log.emit(kind)
        log.emit("model_x.loaded")
        log.emit("modelxx.loaded")  # '_' must not act as a LIKE wildcard
        log.flush()
        assert [e.kind for e in log.iter(kind="run.started")] == ["run.started"]
        assert [e.kind for e in log.iter(kind="run.*")] == [
            "run.started",
            "run.step.done",
            "run.finished",
        ]
        assert [e.kind for e in log.iter(kind="model_x.*")] == ["model_x.loaded"]
        assert log.count(kind="*") == 7
        assert log.count(kind="run.*") == 3
        with pytest.raises(InvalidInputError) as info:
            log.query(kind="run*")
        assert info.value.context["field"] == "kind"

    def test_filters_by_subject_and_request_id(self, log: EventLog) -> None:
        log.emit("prediction", subject="fraud", request_id="req-1")
        log.emit("prediction", subject="churn", request_id="req-1")
        log.emit("prediction", subject="fraud", request_id="req-2")
        log.flush()
        assert [(e.subject, e.request_id) for e in log.iter(subject="fraud")] == [
            ("fraud", "req-1"),
            ("fraud", "req-2"),
        ]
        assert [e.subject for e in log.iter(request_id="req-1")] == ["fraud", "churn"]
        assert log.count(subject="fraud", request_id="req-2") == 1
        assert log.count(subject="nobody") == 0

    def test_filters_by_actor_and_a_list_of_kinds(self, log: EventLog) -> None:
        log.emit("auth.key_created", actor="key:root", subject="a")
        log.emit("prediction", actor="key:root", subject="b")
        log.emit("model.alias_moved", actor="cli:ana", subject="c")
        log.emit("route.set", actor="key:root", subject="d")
        log.emit("route_x.set", actor="key:root", subject="e")  # '_' is no wildcard
        log.flush()
        audit = ["auth.key_created", "model.alias_moved", "route.*"]
        assert [e.subject for e in log.iter(kind=audit)] == ["a", "c", "d"]
        assert [e.subject for e in log.iter(kind=audit, actor="key:root")] == ["a", "d"]
        assert log.count(kind=audit) == 3 and log.count(actor="cli:ana") == 1
        assert log.count(kind=["prediction", "*"]) == 5  # '*' among them: every kind
        newest = log.latest(1, kind=audit, actor="key:root")
        assert [e.subject for e in newest] == ["d"]
        with pytest.raises(InvalidInputError):
            log.query(kind=[])
        with pytest.raises(InvalidInputError):
            log.query(kind=["route*"])

    def test_filters_by_time_window(self, log: EventLog) -> None:
        t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        log.append_many(
            Event("data.batch", payload={"i": i}, time=t0 + timedelta(seconds=i)) for i in range(10)
        )
        log.flush()
        window = log.iter(since=t0 + timedelta(seconds=2), until=t0 + timedelta(seconds=5))
        assert [e.payload["i"] for e in window] == [2, 3, 4]  # since inclusive, until exclusive
        plus_one = timezone(timedelta(hours=1))  # the same instant in another zone
        assert log.count(since=datetime(2026, 3, 1, 13, 0, 8, tzinfo=plus_one)) == 2
        assert log.count(until=t0 + timedelta(microseconds=1)) == 1
        with pytest.raises(InvalidInputError) as info:
            log.count(since=datetime(2026, 3, 1))
        assert info.value.context["field"] == "since"

    @pytest.mark.parametrize("descending", [False, True])
    def test_paging_yields_each_event_once_in_order(self, log: EventLog, descending: bool) -> None:
        log.append_many(Event("data.row", payload={"i": i}) for i in range(2_500))
        log.flush()
        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            page = log.query(limit=100, cursor=cursor, descending=descending)
            seen.extend(e.payload["i"] for e in page)
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        expected = list(range(2_500))
        assert seen == (expected[::-1] if descending else expected)
        assert pages == 25
        assert [e.payload["i"] for e in log.latest(3)] == [2_497, 2_498, 2_499]

    def test_malformed_cursor_is_refused(self, log: EventLog) -> None:
        log.emit("run.started", durable=True)
        log.emit("run.started", durable=True)
        ascending_cursor = log.query(limit=1).next_cursor
        assert ascending_cursor is not None
        for bad in ("not a cursor!", "WzEsMiwzXQ", "", "W10"):
            with pytest.raises(InvalidInputError) as info:
                log.query(cursor=bad)
            assert info.value.context["field"] == "cursor"
        with pytest.raises(InvalidInputError):
            log.query(cursor=ascending_cursor, descending=True)
        with pytest.raises(InvalidInputError):
            log.query(limit=0)

    def test_payload_round_trips(self, events_url: str, log: EventLog) -> None:
        payload = {
            "text": "héllo wörld ✓ 模型 🚀",
            "nested": {"a": [1, 2, {"b": None}], "empty": {}, "list": []},
            "big": 2**63 - 1,
            "negative": -(2**63),
            "unsigned": 2**64 - 1,
            "floats": [0.1, -2.5, 3.141592653589793, 1e-300, 123456.0],
            "none": None,
            "bools": [True, False],
            "quote": 'say "hi"\\n',
        }
        sent = log.emit(
            "llm.call",
            subject="gpt",
            subject_version="2024-06",
            payload=payload,
            request_id="r-✓",
            trace_id="t1",
            actor="alice@example.com",
            durable=True,
        )
        with _open(events_url) as reader:
            (got,) = reader.latest(1)
        assert got == sent
        assert got.payload == payload
        assert got.time == sent.time and got.time.tzinfo is UTC
        assert Event.from_dict(got.to_dict()) == got

    def test_invalid_input_fails_at_emit(self, log: EventLog) -> None:
        for kind in ("Run.Started", "run..started", "run.", "", "1run", "x" * 101, "run-started"):
            with pytest.raises(InvalidInputError) as info:
                log.emit(kind)
            assert info.value.context["field"] == "kind"
        bad_payloads: list[Any] = [{"set": {1, 2}}, {1: "int key"}, {"o": object()}, {"n": 2**64}]
        for payload in [*bad_payloads, ["not", "a", "mapping"], {"nul": "a\x00b"}]:
            with pytest.raises(InvalidInputError) as info:
                log.emit("prediction", payload=payload)
            assert info.value.context["field"] == "payload"
        with pytest.raises(InvalidInputError) as info:
            log.emit("prediction", subject="x" * 256)
        assert info.value.context["field"] == "subject"
        log.flush()
        assert log.count() == 0

    def test_emit_after_close_raises_closed(self, events_url: str) -> None:
        log = _open(events_url)
        log.emit("run.started")
        log.close()
        log.close()  # idempotent
        with pytest.raises(ClosedError):
            log.emit("run.finished")
        with pytest.raises(ClosedError):
            log.append(Event("run.finished"))
        with pytest.raises(ClosedError):
            log.count()
        with _open(events_url) as reopened:
            assert [e.kind for e in reopened.iter()] == ["run.started"]

    # -- health and erasure -----------------------------------------------------

    def test_health_names_the_backend_and_the_backlog(self, events_url: str, log: EventLog) -> None:
        log.emit("run.started", durable=True)
        log.ping()
        facts = log.health()
        url = BackendURL.parse(events_url)
        assert facts["seam"] == "events"
        assert facts["backend"] == url.scheme
        assert facts["unwritten"] == 0
        assert url.password is None or url.password not in str(facts)

    def test_erase_removes_every_event_holding_the_value(
        self, events_url: str, log: EventLog
    ) -> None:
        log.emit("data.row", subject="email:a@x.org", payload={"n": 1})
        log.emit("data.row", payload={"user": {"email": "a@x.org"}, "n": 2})
        log.emit("data.row", payload={"items": [{"email": "a@x.org"}], "n": 3})
        log.emit("data.row", payload={"email": "b@x.org", "n": 4})
        log.emit("data.row", payload={"note": "a@x.org", "n": 5})  # not under that field
        log.emit("data.row", payload={"n": 6})
        assert log.erase("email", "a@x.org") == 3  # flushes first
        with _open(events_url) as reader:
            assert [e.payload["n"] for e in reader.iter()] == [4, 5, 6]
            assert reader.count() == 3
        assert log.erase("email", "a@x.org") == 0

    # -- following --------------------------------------------------------------

    def test_follow_yields_events_committed_after_it_starts(
        self, events_url: str, log: EventLog
    ) -> None:
        log.emit("run.started", subject="old", durable=True)
        follower = log.follow(poll_interval=0.02, idle_timeout=30, kind="run.*")
        with _open(events_url) as other:
            other.emit("run.started", subject="new")
            other.emit("prediction", subject="new")
            other.emit("run.finished", subject="new")
            other.flush()
            got = list(itertools.islice(follower, 2))
        assert [(e.kind, e.subject) for e in got] == [
            ("run.started", "new"),
            ("run.finished", "new"),
        ]

    def test_follow_after_the_latest_misses_nothing_in_between(self, log: EventLog) -> None:
        for i in range(5):
            log.emit("run.step", payload={"i": i})
        log.flush()
        recent = log.latest(2)  # what `conveyor events tail -n 2 -f` prints first
        log.emit("run.step", payload={"i": 5}, durable=True)  # lands before follow starts
        follower = log.follow(after=recent[-1], poll_interval=0.02, idle_timeout=30)
        log.emit("run.step", payload={"i": 6}, durable=True)
        got = [e.payload["i"] for e in itertools.islice(follower, 2)]
        assert [e.payload["i"] for e in recent] + got == [3, 4, 5, 6]
        with pytest.raises(NotFoundError):
            log.follow(after=Event("run.step"))  # never stored

    def test_follow_stops_when_idle(self, log: EventLog) -> None:
        log.emit("run.started", durable=True)
        assert list(log.follow(poll_interval=0.01, idle_timeout=0.05)) == []

    def test_concurrent_threads_emit_without_loss(self, log: EventLog) -> None:
        def work(n: int) -> None:
            for i in range(500):
                log.emit("prediction", subject=f"t{n}", payload={"i": i})

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log.flush()
        assert log.count() == 2_000
        for n in range(4):
            assert [e.payload["i"] for e in log.iter(subject=f"t{n}")] == list(range(500))
