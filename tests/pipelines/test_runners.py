"""The Runner protocol and the table of runners: the scheduler works with any Runner."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import Backends

from conveyor.backends import BackendSpec
from conveyor.capability import EventKind
from conveyor.errors import InvalidInputError, MissingDependencyError
from conveyor.events.log import EventLog
from conveyor.pipelines import (
    RUNNERS,
    LocalRunner,
    OnNewVersion,
    Pipeline,
    PipelineRun,
    Runner,
    Scheduler,
    StepContext,
    runner_for,
)
from conveyor.project import Project, init_project
from conveyor.store.database import MetadataStore
from conveyor.store.runs import Run


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, 1, hour, minute, tzinfo=UTC)


class RecordingRunner:
    """A runner that is not LocalRunner: it records what it is asked and runs nothing here,
    as a runner handing steps to a cluster would from the scheduler's point of view."""

    def __init__(self, store: MetadataStore, events: EventLog) -> None:
        self.store = store
        self.events = events
        self.runs: list[tuple[str, dict[str, Any]]] = []
        self.emitted: list[tuple[str, str, dict[str, Any]]] = []
        self.recovered: list[list[str]] = []
        self.on_recover: threading.Event | None = None

    @classmethod
    def for_project(cls, project: Project, **options: Any) -> RecordingRunner:
        return cls(project.store, project.events)

    def run(
        self,
        pipeline: Pipeline,
        params: Mapping[str, Any] | None = None,
        *,
        listener: Any = None,
        progress: Any = None,
    ) -> PipelineRun:
        self.runs.append((pipeline.name, dict(params or {})))
        now = datetime.now(UTC)
        return PipelineRun(
            id=uuid.uuid4().hex,
            pipeline=pipeline.name,
            status="succeeded",
            params=dict(params or {}),
            tags={"runner": "recording"},
            attempt=1,
            started_at=now,
            ended_at=now,
            error=None,
            steps=(),
        )

    def recover(self, pipelines: Iterable[Pipeline] = ()) -> list[Run]:
        self.recovered.append(sorted(p.name for p in pipelines))
        if self.on_recover is not None:
            self.on_recover.set()
        return []

    def emit(
        self,
        kind: EventKind,
        pipeline: str,
        run_id: str | None,
        payload: Mapping[str, Any],
        listener: Any = None,
    ) -> None:
        self.emitted.append((kind.name, pipeline, dict(payload)))
        self.events.record(kind, subject=pipeline, trace_id=run_id, payload=dict(payload))


def _pipeline(name: str, **options: Any) -> Pipeline:
    p = Pipeline(name, **options)

    @p.step(outputs="params")
    def echo(ctx: StepContext) -> dict[str, Any]:
        return dict(ctx.params)

    return p


def test_local_runner_and_a_stranger_both_satisfy_the_protocol(backends: Backends) -> None:
    assert isinstance(LocalRunner(backends.store, backends.events), Runner)
    assert isinstance(RecordingRunner(backends.store, backends.events), Runner)
    assert not isinstance(object(), Runner)


def test_the_scheduler_fires_schedules_and_triggers_through_any_runner(
    backends: Backends,
) -> None:
    runner = RecordingRunner(backends.store, backends.events)
    hourly = _pipeline("hourly", schedule="0 * * * *", catch_up="none")
    on_data = _pipeline("on-data", triggers=[OnNewVersion("sales")])
    scheduler = Scheduler(runner, [hourly, on_data], grace=timedelta(minutes=1))

    fired = scheduler.tick(now=at(10))  # first sight exactly on a slot: it fires
    assert [r.pipeline for r in fired] == ["hourly"] and fired[0].tags == {"runner": "recording"}
    assert runner.runs == [
        ("hourly", {"triggers": [{"kind": "schedule", "slot": at(10).isoformat()}]})
    ]
    assert scheduler.tick(now=at(10, 30)) == []  # claimed: never twice
    # Down from 10:30 to 12:30 with catch_up none: 12:00 is skipped, through the runner's emit.
    assert scheduler.tick(now=at(12, 30)) == []
    (kind, pipeline, payload), *_ = runner.emitted
    assert (kind, pipeline, payload["slot"]) == ("schedule.skipped", "hourly", at(12).isoformat())
    backends.events.flush()
    assert [e.kind for e in backends.events.iter(subject="hourly")] == ["schedule.skipped"]


def test_serve_recovers_through_the_runner_then_ticks(backends: Backends) -> None:
    runner = RecordingRunner(backends.store, backends.events)
    stop = threading.Event()
    runner.on_recover = stop  # one loop: recover, tick, then stop
    scheduler = Scheduler(
        runner, [_pipeline("every-minute", schedule="* * * * *")], poll_interval=0.01
    )
    scheduler.serve(stop)
    assert runner.recovered == [["every-minute"]]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    init_project(tmp_path, name="runners")
    with Project.open(tmp_path) as proj:
        yield proj


def test_runner_for_builds_a_named_runner_for_a_project(project: Project) -> None:
    local = runner_for("local", project, heartbeat_interval=0.5, stale_after=5)
    assert isinstance(local, LocalRunner)
    assert (local.owner, local.project, local.heartbeat_interval) == (project, "runners", 0.5)
    result = local.run(_pipeline("once"), {"x": 1}).raise_for_status()
    assert result.outputs == {"params": {"x": 1}}
    with pytest.raises(InvalidInputError, match="unknown pipeline runner 'lokal'; known: local"):
        runner_for("lokal", project)


def test_registered_runners_are_loaded_lazily_with_clear_errors(project: Project) -> None:
    RUNNERS.register("recording", BackendSpec(f"{__name__}:RecordingRunner"))
    RUNNERS.register(
        "ray", BackendSpec("conveyor.pipelines.no_ray:RayRunner", "ray", ("no_ray_xyz",))
    )
    RUNNERS.register("broken", BackendSpec("json:JSONDecoder"))
    try:
        recording = runner_for("recording", project)
        assert isinstance(recording, RecordingRunner) and recording.store is project.store
        with pytest.raises(MissingDependencyError) as missing:
            runner_for("ray", project)
        assert str(missing.value) == (
            "the 'ray' pipeline runner needs no_ray_xyz, which is not installed: "
            "pip install 'conveyor[ray]'"
        )
        assert missing.value.context["runner"] == "ray"
        with pytest.raises(InvalidInputError, match=r"\(json:JSONDecoder\) has no for_project"):
            runner_for("broken", project)
        with pytest.raises(InvalidInputError, match="already registered"):
            RUNNERS.register("local", BackendSpec(f"{__name__}:RecordingRunner"))
        with pytest.raises(InvalidInputError, match="register a BackendSpec"):
            RUNNERS.register("bad", "conveyor.pipelines.runner:LocalRunner")  # type: ignore[arg-type]
    finally:
        for name in ("recording", "ray", "broken"):
            RUNNERS.unregister(name)


class _NotARunner:
    @classmethod
    def for_project(cls, project: Project, **options: Any) -> object:
        return object()


def test_a_runner_class_must_build_a_runner(project: Project) -> None:
    RUNNERS.register("imposter", BackendSpec(f"{__name__}:_NotARunner"))
    try:
        with pytest.raises(InvalidInputError, match="which is not a Runner"):
            runner_for("imposter", project)
    finally:
        RUNNERS.unregister("imposter")


def test_the_cli_runs_a_pipeline_through_the_runner_it_names(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conveyor.cli.pipeline import pipeline_app

    root = tmp_path / "cli"
    init_project(root, name="cli-runner")
    (root / "flows.py").write_text(
        "from conveyor.pipelines import Pipeline\n"
        "p = Pipeline('via-runner')\n"
        "@p.step\n"
        "def s(ctx):\n"
        "    raise RuntimeError('the local runner would run this')\n"
    )
    RUNNERS.register("recording", BackendSpec(f"{__name__}:RecordingRunner"))
    try:
        args = ["run", f"{root}/flows.py:p", "-C", str(root), "--json", "-p", "n=2"]
        done = CliRunner().invoke(pipeline_app, [*args, "--runner", "recording"])
        assert done.exit_code == 0, done.output
        body = json.loads(done.output)
        assert body["tags"] == {"runner": "recording"} and body["params"] == {"n": 2}
        local = CliRunner().invoke(pipeline_app, args)
        assert local.exit_code == 1 and json.loads(local.output)["status"] == "failed"
        unknown = CliRunner().invoke(pipeline_app, [*args, "--runner", "ray"])
        assert unknown.exit_code == 1
        assert "ray" in unknown.output and "local" in unknown.output, unknown.output
    finally:
        RUNNERS.unregister("recording")
