"""OnEvent: events in the log start a pipeline once, coalesced, never for what came before."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from pipeline_support import Backends

from conveyor.errors import InvalidInputError
from conveyor.events.log import EventLog
from conveyor.pipelines import (
    LocalRunner,
    OnEvent,
    OnNewVersion,
    Pipeline,
    Scheduler,
    StepContext,
    history,
)
from conveyor.pipelines.tables import ScheduleRecord
from conveyor.store.database import MetadataStore


def _pipeline(name: str, *triggers: Any) -> Pipeline:
    p = Pipeline(name, triggers=triggers)

    @p.step(outputs="params")
    def echo(ctx: StepContext) -> dict[str, Any]:
        return dict(ctx.params)

    return p


def _scheduler(b: Backends, pipelines: list[Pipeline]) -> Scheduler:
    return Scheduler(
        LocalRunner(b.store, b.events, heartbeat_interval=0.05, stale_after=30), pipelines
    )


def _emit(b: Backends, kind: str, subject: str = "fraud") -> str:
    event = b.events.emit(kind, subject=subject, payload={"psi": 0.4})
    b.events.flush()
    return event.id


def test_events_fire_once_coalesced_and_never_for_the_past(backends: Backends) -> None:
    before = _emit(backends, "drift.detected")
    p = _pipeline("on-drift", OnEvent(["drift.*", "alert.fired"]))
    scheduler = _scheduler(backends, [p])
    assert scheduler.tick() == []  # arms at the end of the log: `before` never fires
    assert scheduler.tick() == []
    with backends.store.read() as session:
        row = session.get(ScheduleRecord, "on-drift")
        assert row is not None and set(row.state["triggers"]["event:alert.fired,drift.*"]["marks"])
    _emit(backends, "prediction")  # not a listened kind
    _emit(backends, "drift")  # 'drift.*' matches drift.x, not drift itself
    assert scheduler.tick() == []

    ids = [_emit(backends, "drift.detected"), _emit(backends, "alert.fired", "api")]
    ids.append(_emit(backends, "drift.detected", "churn"))
    [run] = scheduler.tick()  # three events between ticks: one run
    [reason] = run.params["triggers"]
    assert reason["kind"] == "event" and reason["count"] == 3
    assert reason["event_ids"] == ids and before not in reason["event_ids"]
    assert reason["kinds"] == ["alert.fired", "drift.detected"]
    assert run.outputs["params"] == run.params  # the step sees which events started it
    assert scheduler.tick() == []
    assert _scheduler(backends, [p]).tick() == []  # a restart does not replay them

    later = _emit(backends, "drift.detected")
    [run] = _scheduler(backends, [p]).tick()
    assert run.params["triggers"][0]["event_ids"] == [later]
    assert len(history(backends.store, "on-drift").items) == 2


def test_subject_filter_and_a_lone_old_event(sqlite_backends: Backends) -> None:
    b = sqlite_backends
    only = _emit(b, "alert.fired", "fraud")  # the only match: the mark starts before it
    p = _pipeline("on-fraud-alerts", OnEvent("alert.fired", subject="fraud"))
    scheduler = _scheduler(b, [p])
    assert scheduler.tick() == []
    _emit(b, "alert.fired", "churn")
    assert scheduler.tick() == []
    new = _emit(b, "alert.fired", "fraud")
    [run] = scheduler.tick()
    assert run.params["triggers"][0]["event_ids"] == [new] != [only]
    assert run.params["triggers"][0]["subject"] == "fraud"


def test_many_events_page_through_and_fire_once(sqlite_backends: Backends) -> None:
    b = sqlite_backends
    for _ in range(3):
        b.events.emit("drift.detected", subject="x")
    b.events.flush()
    p = _pipeline("burst", OnEvent("drift.detected"))
    scheduler = _scheduler(b, [p])
    assert scheduler.tick() == []
    emitted = [b.events.emit("drift.detected", subject="x").id for _ in range(1203)]
    b.events.flush()
    [run] = scheduler.tick()
    reason = run.params["triggers"][0]
    assert reason["count"] == 1203 and reason["event_ids"] == emitted[:100]
    assert scheduler.tick() == []
    last = _emit(b, "drift.detected")
    [run] = scheduler.tick()
    assert run.params["triggers"][0]["event_ids"] == [last]


def test_an_event_and_an_arrival_in_one_tick_start_one_run(sqlite_backends: Backends) -> None:
    from test_scheduler import _add_version

    b = sqlite_backends
    p = _pipeline("both", OnNewVersion("sales"), OnEvent("drift.detected"))
    scheduler = _scheduler(b, [p])
    assert scheduler.tick() == []
    _add_version(b, "sales", 1)
    _emit(b, "drift.detected")
    [run] = scheduler.tick()
    assert sorted(r["kind"] for r in run.params["triggers"]) == ["event", "new_version"]


def test_two_schedulers_planning_the_same_events_fire_once(
    sqlite_backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    b = sqlite_backends
    p = _pipeline("contended", OnEvent("drift.detected"))
    first, second = _scheduler(b, [p]), _scheduler(b, [p])
    first.tick()
    _emit(b, "drift.detected")
    [plan_a] = first.due()
    [plan_b] = second.due()
    assert plan_a.version == plan_b.version and plan_a.run and plan_b.run
    assert second.fire(plan_b) is not None
    with caplog.at_level(logging.INFO, logger="conveyor.pipelines.scheduler"):
        assert first.fire(plan_a) is None
    assert "another scheduler fired first" in caplog.text
    assert len(history(b.store, "contended").items) == 1


def test_schedulers_ticking_at_once_in_threads_fire_each_batch_once(backends: Backends) -> None:
    p = _pipeline("raced", OnEvent("drift.*"))
    workers, rounds = 4, 4
    opened = [
        (MetadataStore.from_url(backends.store_url), EventLog.from_url(backends.events_url))
        for _ in range(workers)
    ]
    schedulers = [
        Scheduler(LocalRunner(store, events, heartbeat_interval=0.05, stale_after=30), [p])
        for store, events in opened
    ]
    _emit(backends, "drift.detected")  # before the schedule existed
    emitted: list[str] = []
    fired: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def between_rounds() -> None:  # one thread writes the next batch while all wait
        emitted.append(_emit(backends, "drift.detected"))
        emitted.append(_emit(backends, "drift.retrain_requested"))

    barrier = threading.Barrier(workers, action=between_rounds)

    def work(scheduler: Scheduler) -> None:
        try:
            scheduler.tick()  # first sight, concurrently: arms once
            for _ in range(rounds):
                barrier.wait(timeout=30)
                runs = scheduler.tick()
                with lock:
                    fired.extend(runs)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    try:
        threads = [threading.Thread(target=work, args=(s,)) for s in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        seen = [i for run in fired for i in run.params["triggers"][0]["event_ids"]]
        assert sorted(seen) == sorted(emitted)  # every event once, none from before
        assert len(history(backends.store, "raced").items) == len(fired) <= rounds
    finally:
        for store, events in opened:
            events.close()
            store.close()


def test_on_event_refuses_what_it_cannot_watch(sqlite_backends: Backends) -> None:
    for bad, field in ((["*"], "kinds"), ([], "kinds"), (["Not A Kind"], "kinds"), ([3], "kinds")):
        with pytest.raises(InvalidInputError) as info:
            OnEvent(bad)  # type: ignore[arg-type]
        assert info.value.context.get("field") == field, bad
    with pytest.raises(InvalidInputError, match="subject"):
        OnEvent("drift.detected", subject="")
    with pytest.raises(InvalidInputError, match="event log"):
        OnEvent("drift.detected").poll(sqlite_backends.store, {})
    assert OnEvent(["b.x", "a.*", "b.x"]) == OnEvent(["a.*", "b.x"])
    assert OnEvent(["b.x", "a.*"], subject="s").key == "event:a.*,b.x@s"
