"""Continuous training: retraining on events, cron slots and new data, through the scheduler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training_support import SCALED_SGD, loans

from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.pipelines import LocalRunner, OnEvent, OnNewVersion, Scheduler, history
from conveyor.project import Project, init_project
from conveyor.testing.wait import wait_until
from conveyor.training.continuous import (
    retraining_pipeline,
    retraining_schedules,
    trigger_label,
)
from conveyor.training.flow import train_candidate
from conveyor.training.settings import ModelSpec, model_spec

SPEC = """
slos:
  quality: {metric: roc_auc, floor: 0.7, direction: maximize}
models:
  risk:
    train: ct_trainer:fit
    dataset: loans
    features: [income, debt, age]
    target: default
    holdout: {by: hash, column: customer, fraction: 0.25}
    gates:
      - metric_floor: {}
    retrain:
      cron: "0 3 * * *"
      on_events: [drift.detected]
  online:
    train: ct_trainer:fit_sgd
    dataset: loans
    features: [income, debt, age]
    target: default
    holdout: {by: random, fraction: 0.2}
    gates:
      - metric_floor: {}
    auto_promote: true
    retrain: {on_new_data: true, incremental: true}
  manual_only:
    train: ct_trainer:fit
    dataset: loans
    features: [income, debt, age]
    target: default
"""

TRAINER = (
    SCALED_SGD
    + """
from sklearn.linear_model import LogisticRegression


def fit(X, y, *, seed):
    return LogisticRegression().fit(X, y)
"""
)


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 12, 1, hour, minute, second, tzinfo=UTC)


def make_project(path: Path) -> None:
    init_project(path, name="continuous")
    with (path / "conveyor.yaml").open("a") as f:
        f.write(SPEC)
    (path / "ct_trainer.py").write_text(TRAINER)


@pytest.fixture
def root(backend_set: dict[str, str], tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A project folder with the models above, and the environment of each backend set."""
    make_project(tmp_path)
    return tmp_path, backend_set


@pytest.fixture
def project(root: tuple[Path, dict[str, str]]) -> Iterator[Project]:
    with Project.open(root[0], env=root[1]) as proj:
        yield proj


def scheduler_for(project: Project, *models: str) -> Scheduler:
    """A scheduler of the named models' retraining, as `conveyor pipeline schedule` builds it."""
    pipelines = [p for p in retraining_schedules(project) if p.name.split(".", 1)[1] in models]
    runner = LocalRunner.for_project(project, heartbeat_interval=0.2, stale_after=60)
    return Scheduler(runner, pipelines)


def drift(project: Project, subject: str = "loans") -> str:
    """What a drift detector's job writes when it finds drift."""
    event = project.events.emit(
        "drift.detected", subject=subject, payload={"feature": "income", "psi": 0.31}, durable=True
    )
    return event.id


def training_runs(project: Project, name: str) -> list[Any]:
    return list(project.store.runs.list(kind="train", name=name, limit=100).items)


def test_a_drift_event_retrains_once_to_challenger_and_a_failure_moves_nothing(
    project: Project,
) -> None:
    project.data.ingest("loans", loans(1500, seed=1))
    first = train_candidate(project, "risk", seed=1)
    project.registry.promote("risk", first.version, actor="ana")
    before = drift(project)  # written before the schedule existed: never fires
    scheduler = scheduler_for(project, "risk")
    assert scheduler.tick(now=at(1)) == []
    assert scheduler.tick(now=at(1, 1)) == []

    event_id = drift(project)
    [run] = scheduler.tick(now=at(1, 2))
    assert run.succeeded, run.error
    assert run.pipeline == "retrain.risk"
    [reason] = run.params["triggers"]
    assert reason["kind"] == "event" and reason["event_ids"] == [event_id] != [before]
    candidate = run.outputs["candidate"]
    assert candidate["version"] == "risk@2" and candidate["challenger"]
    assert not candidate["champion"]  # risk has no auto_promote
    assert project.registry.get("risk", "challenger").number == 2
    assert project.registry.get("risk", "champion").number == 1
    v2 = project.registry.get("risk", 2)
    assert v2.tags["trigger"] == "event:drift.detected"
    [newest, _] = training_runs(project, "risk")[:2]
    assert newest.id == v2.run_id and newest.tags["trigger"] == "event:drift.detected"
    assert scheduler.tick(now=at(1, 3)) == []  # the event was handled
    # About another model (its alert, its live drift): not risk's to retrain on.
    drift(project, subject="online")
    assert scheduler.tick(now=at(1, 3, 30)) == []
    # About risk itself (an alert's retrain action, a live drift check of risk): it is.
    drift(project, subject="risk")
    [run] = scheduler.tick(now=at(1, 3, 45))
    assert run.succeeded and run.outputs["candidate"]["version"] == "risk@3", run.error

    # The drift was real: the new data carries no signal. The candidate fails its gate.
    project.data.ingest("loans", loans(1500, seed=2, start=1500, noise=True))
    drift(project)
    [run] = scheduler.tick(now=at(1, 4))
    assert run.succeeded, run.error  # training worked; the candidate did not pass
    assert run.outputs["candidate"]["failed"] == ["quality.roc_auc"]
    assert not run.outputs["candidate"]["challenger"]
    assert project.registry.get("risk", "challenger").number == 3
    assert project.registry.get("risk", "champion").number == 1
    project.events.flush()
    verdicts = [
        (e.payload["version"], e.payload["trigger"], e.payload["verdict"])
        for e in project.events.query(kind="model.candidate", subject="risk").items
    ]
    assert verdicts == [
        ("risk@1", "manual", "passed"),
        ("risk@2", "event:drift.detected", "passed"),
        ("risk@3", "event:drift.detected", "passed"),
        ("risk@4", "event:drift.detected", "failed"),
    ]


def test_a_cron_slot_retrains_on_the_latest_version(project: Project) -> None:
    project.data.ingest("loans", loans(1200, seed=3))
    scheduler = scheduler_for(project, "risk")
    assert scheduler.tick(now=at(2, 59)) == []
    with pytest.raises(NotFoundError):
        project.registry.get("risk", "challenger")
    project.data.ingest("loans", loans(600, seed=4, start=1200))
    [run] = scheduler.tick(now=at(3, 0, 2))
    assert run.params["triggers"] == [{"kind": "schedule", "slot": at(3).isoformat()}]
    version = project.registry.get("risk", "challenger")
    assert version.tags["trigger"] == "schedule"
    latest = project.data.versions.latest("loans")
    assert latest is not None and version.dataset_version_ids == [latest.id]
    with pytest.raises(NotFoundError):
        project.registry.get("risk", "champion")  # a challenger, not promoted
    assert scheduler.tick(now=at(3, 5)) == []
    assert len(history(project.store, "retrain.risk").items) == 1


def test_new_data_continues_the_champion_incrementally(project: Project) -> None:
    scheduler = scheduler_for(project, "online")
    assert scheduler.tick() == []  # no data yet
    project.data.ingest("loans", loans(1500, seed=5))
    [run] = scheduler.tick()
    first = project.registry.get("online", "champion")  # auto_promote: true
    assert first.number == 1 and first.tags["incremental"] == "false"
    assert run.outputs["candidate"]["champion"] and first.tags["trigger"] == "new_data:loans@1"

    project.data.ingest("loans", loans(500, seed=6, start=1500))
    [run] = scheduler.tick()
    assert run.params["triggers"][0]["version"] == 2
    second = project.registry.get("online", "champion")
    assert second.number == 2 and second.parent_id == first.id  # continued, not refitted
    assert second.tags == {**second.tags, "incremental": "true", "trigger": "new_data:loans@2"}
    old = project.registry.load(first).model
    new = project.registry.load(second).model
    assert not np.allclose(old.coef_, new.coef_)  # partial_fit learned from the new rows
    assert scheduler.tick() == []


def test_two_schedulers_ticking_at_once_retrain_once(root: tuple[Path, dict[str, str]]) -> None:
    path, env = root
    with Project.open(path, env=env) as project:
        project.data.ingest("loans", loans(1200, seed=7))
        train_candidate(project, "risk", seed=1)
    projects = [Project.open(path, env=env) for _ in range(3)]
    try:
        schedulers = [scheduler_for(p, "risk") for p in projects]
        for s in schedulers:
            s.tick(now=at(1))
        drift(projects[0])
        barrier = threading.Barrier(len(schedulers))
        fired: list[Any] = []
        errors: list[BaseException] = []

        def work(scheduler: Scheduler) -> None:
            try:
                barrier.wait(timeout=30)
                fired.extend(scheduler.tick(now=at(1, 1)))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert len(fired) == 1 and fired[0].succeeded, fired
        assert len(history(projects[0].store, "retrain.risk").items) == 1
        assert sorted(v.number for v in projects[0].registry.list("risk").items) == [1, 2]
    finally:
        for p in projects:
            p.close()


def test_retraining_pipelines_come_from_the_retrain_spec(project: Project) -> None:
    by_name = {p.name: p for p in retraining_schedules(project)}
    assert set(by_name) == {"retrain.risk", "retrain.online"}  # manual_only has no trigger
    risk, online = by_name["retrain.risk"], by_name["retrain.online"]
    assert risk.schedule == "0 3 * * *"
    # Events about the model or about its data set, no other.
    assert risk.triggers == (
        OnEvent(["drift.detected"], subject="risk"),
        OnEvent(["drift.detected"], subject="loans"),
    )
    assert online.schedule is None and online.triggers == (OnNewVersion("loans"),)
    assert [s.name for s in risk.steps] == ["train"]

    spec = ModelSpec(
        train="m:fit",
        dataset="d",
        features=["x"],
        target="y",
        retrain={"on_events": ["Drift Detected"]},  # type: ignore[arg-type]
    )
    with pytest.raises(InvalidInputError, match=r"models\.m\.retrain\.on_events") as info:
        retraining_pipeline("m", spec)
    assert info.value.context["field"] == "models.m.retrain.on_events"

    assert trigger_label({}) == "manual"
    assert trigger_label({"trigger": "backfill"}) == "backfill"
    assert (
        trigger_label(
            {
                "triggers": [
                    {"kind": "schedule", "slot": "x"},
                    {"kind": "new_version", "dataset": "loans", "version": 4},
                    {"kind": "event", "kinds": ["alert.fired", "drift.detected"]},
                ]
            }
        )
        == "schedule+new_data:loans@4+event:alert.fired,drift.detected"
    )


def test_a_retraining_run_by_hand_is_labelled_manual(project: Project) -> None:
    project.data.ingest("loans", loans(1200, seed=8))
    runner = LocalRunner.for_project(project)
    run = runner.run(retraining_pipeline("risk", model_spec(project.spec, "risk")))
    assert run.succeeded, run.error
    assert project.registry.get("risk", 1).tags["trigger"] == "manual"
    bare = LocalRunner(project.store, project.events, project.artifacts)
    failed = bare.run(retraining_pipeline("risk", model_spec(project.spec, "risk")))
    assert not failed.succeeded and "LocalRunner.for_project(project)" in (failed.error or "")


def test_pipeline_schedule_runs_the_models_retraining(tmp_path: Path) -> None:
    path = tmp_path
    make_project(path)
    with Project.open(path) as project:
        project.data.ingest("loans", loans(1200, seed=9))
    code = "from conveyor.cli.pipeline import pipeline_app; pipeline_app()"
    log = path / "schedule.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", code, "schedule", "-C", str(path), "--poll-interval", "0.1s"],
            cwd=path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "150"},
        )
    emitted: list[str] = []

    def risk_retrained() -> list[Any] | None:
        assert child.poll() is None, log.read_text()
        with Project.open(path) as project:
            # risk's trigger armed in the tick that started online's first run
            if not emitted and history(project.store, "retrain.online").items:
                emitted.append(drift(project))
            risks = history(project.store, "retrain.risk").items
            return risks if risks and risks[0].status == "succeeded" else None

    try:
        risks = wait_until(
            risk_retrained,
            timeout=90,
            interval=0.1,
            message=lambda: f"risk's retraining to succeed; the scheduler said:\n{log.read_text()}",
        )
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(30)
    text = log.read_text()
    assert child.returncode == 0, text
    assert "scheduling retrain.risk, retrain.online" in text, text
    assert risks[0].params["triggers"][0]["event_ids"] == emitted
    with Project.open(path) as project:
        assert project.registry.get("risk", "challenger").tags["trigger"] == "event:drift.detected"
        assert project.registry.get("online", "champion").number == 1
