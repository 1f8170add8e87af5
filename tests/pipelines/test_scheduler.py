"""The scheduler: cron slots and catch-up, data-arrival triggers, restarts, concurrent ticks."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pipeline_support import Backends

from conveyor.data.tables import DatasetRecord, DatasetVersionRecord
from conveyor.errors import InvalidInputError
from conveyor.events.log import EventLog
from conveyor.pipelines import (
    LocalRunner,
    OnNewVersion,
    Pipeline,
    PipelineDefinitionError,
    Scheduler,
    StepContext,
    history,
)
from conveyor.pipelines.tables import ScheduleRecord
from conveyor.store.database import MetadataStore
from conveyor.store.models import RunRecord
from conveyor.testing.wait import wait_until


def at(hour: int, minute: int = 0, second: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=UTC)


def _pipeline(name: str, **options: Any) -> Pipeline:
    p = Pipeline(name, **options)

    @p.step(outputs="params")
    def echo(ctx: StepContext) -> dict[str, Any]:
        return dict(ctx.params)

    return p


def _scheduler(b: Backends, pipelines: list[Pipeline], **options: Any) -> Scheduler:
    runner = LocalRunner(b.store, b.events, heartbeat_interval=0.05, stale_after=30)
    return Scheduler(runner, pipelines, **options)


def _slots(runs: Sequence[Any]) -> list[str]:
    return [r.params["triggers"][0]["slot"] for r in runs]


def test_catch_up_latest_runs_one_missed_slot_and_none_skips_to_the_next(
    backends: Backends,
) -> None:
    latest = _pipeline("hourly-latest", schedule="0 * * * *", catch_up="latest")
    skip = _pipeline("hourly-none", schedule="0 * * * *", catch_up="none")
    scheduler = _scheduler(backends, [latest, skip])

    assert scheduler.tick(now=at(10, 30)) == []  # first sight: the next slot is 11:00
    fired = scheduler.tick(now=at(11, 0, 5))  # a few seconds late is on time for both
    assert sorted(r.pipeline for r in fired) == ["hourly-latest", "hourly-none"]
    assert _slots(fired) == [at(11).isoformat()] * 2
    assert scheduler.tick(now=at(11, 30)) == []

    # Down from 11:30 to 14:20: slots 12:00, 13:00 and 14:00 were missed.
    fired = scheduler.tick(now=at(14, 20))
    assert [r.pipeline for r in fired] == ["hourly-latest"]
    assert _slots(fired) == [at(14).isoformat()]  # one run, for the latest slot
    [skipped] = backends.payloads("hourly-none", "schedule.skipped")
    assert skipped["slot"] == at(14).isoformat()
    assert scheduler.tick(now=at(14, 21)) == []

    fired = scheduler.tick(now=at(15, 0, 1))
    assert sorted(r.pipeline for r in fired) == ["hourly-latest", "hourly-none"]
    with backends.store.read() as session:
        row = session.get(ScheduleRecord, "hourly-none")
        assert row is not None
        assert (row.last_fired_at, row.next_fire_at) == (at(15), at(16))

    assert _slots(history(backends.store, "hourly-latest").items) == [
        at(h).isoformat() for h in (15, 14, 11)
    ]
    assert _slots(history(backends.store, "hourly-none").items) == [
        at(h).isoformat() for h in (15, 11)
    ]


def test_a_restart_neither_skips_nor_repeats_a_slot(sqlite_backends: Backends) -> None:
    p = _pipeline("every-5", schedule="*/5 * * * *")
    assert _scheduler(sqlite_backends, [p]).tick(now=at(9, 2)) == []  # next: 09:05
    # The scheduler dies before 09:05 and a new one starts at 09:07: 09:05 still runs.
    restarted = _scheduler(sqlite_backends, [p])
    assert _slots(restarted.tick(now=at(9, 7))) == [at(9, 5).isoformat()]
    # Restarted again within the same slot: nothing runs twice.
    again = _scheduler(sqlite_backends, [p])
    assert again.tick(now=at(9, 8)) == []
    assert _slots(again.tick(now=at(9, 10))) == [at(9, 10).isoformat()]
    assert len(history(sqlite_backends.store, "every-5").items) == 2


def test_a_changed_or_added_schedule_starts_afresh(sqlite_backends: Backends) -> None:
    _scheduler(sqlite_backends, [_pipeline("evolving", schedule="0 * * * *")]).tick(now=at(10, 30))
    # Redeployed as daily at 06:00: the hourly slot stored (11:00) no longer applies.
    daily = _pipeline("evolving", schedule="0 6 * * *")
    assert _scheduler(sqlite_backends, [daily]).tick(now=at(11, 5)) == []
    assert _slots(_scheduler(sqlite_backends, [daily]).tick(now=at(6, day=2))) == [
        at(6, day=2).isoformat()
    ]
    # A trigger-only pipeline that gains a schedule gets its first slot stored, then fired.
    _scheduler(sqlite_backends, [_pipeline("grows", triggers=[OnNewVersion("x")])]).tick(at(9))
    grown = _pipeline("grows", schedule="*/10 * * * *", triggers=[OnNewVersion("x")])
    assert _scheduler(sqlite_backends, [grown]).tick(now=at(9, 1)) == []
    assert _slots(_scheduler(sqlite_backends, [grown]).tick(now=at(9, 10, 2))) == [
        at(9, 10).isoformat()
    ]


def test_first_sight_exactly_on_a_slot_fires_it(sqlite_backends: Backends) -> None:
    p = _pipeline("on-the-dot", schedule="0 6 * * *")
    assert _slots(_scheduler(sqlite_backends, [p]).tick(now=at(6))) == [at(6).isoformat()]


def test_two_schedulers_planning_the_same_slot_fire_it_once(
    sqlite_backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    p = _pipeline("contended", schedule="*/5 * * * *")
    first, second = _scheduler(sqlite_backends, [p]), _scheduler(sqlite_backends, [p])
    first.tick(now=at(9, 2))
    # Both read the row before either writes: the interleaving that races.
    [plan_a] = first.due(now=at(9, 5, 1))
    [plan_b] = second.due(now=at(9, 5, 1))
    assert plan_a.version == plan_b.version and plan_a.slot == plan_b.slot == at(9, 5)
    won = second.fire(plan_b)
    with caplog.at_level(logging.INFO, logger="conveyor.pipelines.scheduler"):
        lost = first.fire(plan_a)
    assert won is not None and lost is None
    assert "another scheduler fired first" in caplog.text
    assert "concurrent" in caplog.text.lower() or "changed since it was read" in caplog.text
    assert len(history(sqlite_backends.store, "contended").items) == 1


def test_schedulers_ticking_at_once_in_threads_fire_each_slot_once(backends: Backends) -> None:
    p = _pipeline("raced", schedule="*/5 * * * *", triggers=[OnNewVersion("arrivals")])
    workers = 4
    # Each scheduler has its own connections, as separate processes would.
    opened = [
        (MetadataStore.from_url(backends.store_url), EventLog.from_url(backends.events_url))
        for _ in range(workers)
    ]
    schedulers = [
        Scheduler(LocalRunner(store, events, heartbeat_interval=0.05, stale_after=30), [p])
        for store, events in opened
    ]
    try:
        moments = [at(9, 2), at(9, 5, 1), at(9, 5, 2), at(9, 10, 1), at(9, 20)]
        fired: list[Any] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        barrier = threading.Barrier(workers)

        def work(scheduler: Scheduler) -> None:
            try:
                for moment in moments:
                    barrier.wait(timeout=30)
                    runs = scheduler.tick(now=moment)
                    with lock:
                        fired.extend(runs)
            except BaseException as exc:
                errors.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=work, args=(s,)) for s in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        # 09:02 creates the row (first sight, concurrently), 09:05 and 09:10 fire,
        # the second tick in 09:05 fires nothing, 09:20 fires the latest missed slot.
        expected = [at(9, 5).isoformat(), at(9, 10).isoformat(), at(9, 20).isoformat()]
        assert sorted(_slots(fired)) == expected
        assert sorted(_slots(history(backends.store, "raced").items)) == expected
    finally:
        for store, events in opened:
            events.close()
            store.close()


def _add_version(b: Backends, dataset: str, number: int) -> str:
    version_id = uuid.uuid4().hex
    with b.store.session() as session:
        if session.get(DatasetRecord, dataset) is None:
            session.add(DatasetRecord(name=dataset, latest_number=0))
            session.flush()
        session.add(
            DatasetVersionRecord(
                id=version_id,
                dataset=dataset,
                number=number,
                content_hash=f"sha256:{number:064d}",
                row_count=number,
                schema={"columns": []},
                source={"kind": "test"},
                snapshot_digest="sha256:" + "1" * 64,
                snapshot_size=1,
            )
        )
    return version_id


def test_new_dataset_versions_trigger_one_run_each_time(backends: Backends) -> None:
    p = _pipeline("on-sales", triggers=[OnNewVersion("sales")])
    scheduler = _scheduler(backends, [p])
    assert scheduler.tick() == []  # no such dataset yet
    first = _add_version(backends, "sales", 1)
    _add_version(backends, "returns", 1)  # another dataset: not this trigger's business
    [run] = scheduler.tick()
    assert run.params["triggers"] == [
        {"kind": "new_version", "dataset": "sales", "version": 1, "version_id": first}
    ]
    assert run.outputs["params"] == run.params  # the steps see why they run
    assert scheduler.tick() == []
    _add_version(backends, "sales", 2)
    third = _add_version(backends, "sales", 3)
    [run] = scheduler.tick()  # two arrivals between ticks: one run, for the newest
    assert run.params["triggers"][0]["version_id"] == third
    assert _scheduler(backends, [p]).tick() == []  # a restart does not replay it
    with backends.store.read() as session:
        row = session.get(ScheduleRecord, "on-sales")
        assert row is not None
        assert row.state["triggers"] == {"new_version:sales": {"number": 3, "version_id": third}}


def test_a_slot_and_an_arrival_in_one_tick_start_one_run(sqlite_backends: Backends) -> None:
    p = _pipeline("both", schedule="0 * * * *", triggers=[OnNewVersion("sales")])
    scheduler = _scheduler(sqlite_backends, [p])
    scheduler.tick(now=at(10, 30))
    _add_version(sqlite_backends, "sales", 1)
    [run] = scheduler.tick(now=at(11, 0, 1))
    assert [r["kind"] for r in run.params["triggers"]] == ["schedule", "new_version"]


def test_serve_ticks_and_recovers_until_stopped(sqlite_backends: Backends) -> None:
    b = sqlite_backends
    p = _pipeline("served", triggers=[OnNewVersion("events")])
    # A run a dead scheduler left behind an hour ago.
    dead = b.store.runs.start("pipeline", "served")
    with b.store.session() as session:
        session.execute(
            sa.update(RunRecord)
            .where(RunRecord.id == dead.id)
            .values(started_at=datetime.now(UTC) - timedelta(hours=1))
        )
    scheduler = _scheduler(b, [p], poll_interval=0.02)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.serve, args=(stop,))
    thread.start()
    try:
        _add_version(b, "events", 1)
        wait_until(
            lambda: history(b.store, "served", status="succeeded").items,
            timeout=30,
            message="the scheduler to fire on the new version",
        )
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert b.store.runs.get(dead.id).status == "failed"
    assert len(history(b.store, "served", status="succeeded").items) == 1


def test_scheduler_refuses_what_it_could_never_fire(sqlite_backends: Backends) -> None:
    with pytest.raises(PipelineDefinitionError, match="no schedule and no triggers"):
        _scheduler(sqlite_backends, [_pipeline("manual")])
    twice = _pipeline("twice", schedule="0 * * * *")
    with pytest.raises(PipelineDefinitionError, match="two pipelines are named 'twice'"):
        _scheduler(sqlite_backends, [twice, _pipeline("twice", schedule="0 * * * *")])
    broken = Pipeline("broken", schedule="0 * * * *")
    broken.add_step(lambda ctx, x: None, name="s", inputs="x")
    with pytest.raises(PipelineDefinitionError, match="needs input"):
        _scheduler(sqlite_backends, [broken])
    with pytest.raises(InvalidInputError, match="now must be time-zone aware"):
        _scheduler(sqlite_backends, [twice]).tick(now=datetime(2026, 1, 1))
    with pytest.raises(InvalidInputError, match="poll_interval"):
        _scheduler(sqlite_backends, [twice], poll_interval=0)
