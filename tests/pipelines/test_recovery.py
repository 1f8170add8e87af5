"""Crash recovery for real: a pipeline process is killed with SIGKILL mid-step, then recovered."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import Backends

from conveyor.pipelines import LocalRunner, Pipeline, StepContext, history, load_pipeline
from conveyor.testing.wait import wait_until

CRASHING = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path

    from conveyor.pipelines import LocalRunner, Pipeline

    failing = Pipeline("crashy")
    retrying = Pipeline("crashy-retry", retry_crashed=True)

    def work(ctx):
        marker = Path(ctx.params["marker"])
        if not marker.exists():  # the first run hangs here until it is killed
            partial = marker.with_suffix(".partial")
            partial.write_text(ctx.run_id)
            partial.replace(marker)  # atomic: the test never reads half a run id
            time.sleep(600)  # hung: the test kills this process (the case under test)
        return 1

    def after(ctx, n):
        return None

    for pipeline in (failing, retrying):
        pipeline.add_step(work, outputs="n")
        pipeline.add_step(after, inputs="n")

    if __name__ == "__main__":
        from conveyor.events.log import EventLog
        from conveyor.store.database import MetadataStore

        store_url, events_url, marker, which = sys.argv[1:]
        pipeline = {"crashy": failing, "crashy-retry": retrying}[which]
        with MetadataStore.from_url(store_url) as store, EventLog.from_url(events_url) as events:
            runner = LocalRunner(store, events, heartbeat_interval=0.05, stale_after=30)
            runner.run(pipeline, {"marker": marker})
    """
)


def _start_and_kill(b: Backends, tmp_path: Path, which: str) -> tuple[Path, str]:
    """Run the pipeline in a child process, SIGKILL it inside its first step; (script, step run)."""
    script = tmp_path / "crashing.py"
    script.write_text(CRASHING)
    marker = tmp_path / "marker"
    log = tmp_path / "child.log"
    with log.open("wb") as err:
        child = subprocess.Popen(
            [sys.executable, str(script), b.store_url, b.events_url, str(marker), which],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_until(
            lambda: marker.exists() or child.poll() is not None,
            timeout=60,
            message="the step to start (its marker file)",
        )
        assert child.poll() is None, log.read_text()
        step_run_id = marker.read_text()
        # Alive and beating: a recoverer with a sane threshold leaves it alone.
        live = LocalRunner(b.store, b.events, heartbeat_interval=1, stale_after=10)
        assert live.recover() == []
        assert b.store.runs.get(step_run_id).status == "running"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return script, step_run_id


def _recover_until_found(runner: LocalRunner, pipelines: list[Pipeline]) -> list[Any]:
    return list(
        wait_until(
            lambda: runner.recover(pipelines), timeout=30, message="the dead run to go stale"
        )
    )


def test_a_killed_pipeline_is_found_and_failed(backends: Backends, tmp_path: Path) -> None:
    _, step_run_id = _start_and_kill(backends, tmp_path, "crashy")
    runs = backends.store.runs
    step_run = runs.get(step_run_id)
    assert step_run.status == "running"  # left behind by the dead process
    assert step_run.parent_id is not None

    recoverer = LocalRunner(
        backends.store, backends.events, heartbeat_interval=0.1, stale_after=0.3
    )
    recovered = _recover_until_found(recoverer, [])
    assert {r.id for r in recovered} == {step_run.parent_id, step_run_id}
    assert all(r.status == "failed" for r in recovered)
    [run] = history(backends.store, "crashy").items
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("the process running this pipeline run stopped: last heartbeat")
    assert "it died or was killed" in run.error
    assert run.step("work").status == "failed"
    assert (run.step("work").error or "").startswith(f"its pipeline run {run.id} crashed")
    assert [s.name for s in run.steps] == ["work"]  # "after" never started

    [crashed] = backends.payloads("crashy", "pipeline.crashed")
    assert crashed["run_id"] == run.id and crashed["action"] == "failed"
    assert crashed["steps"] == ["work"]
    [step_crashed] = backends.payloads("crashy", "step.crashed")
    assert step_crashed["step_run_id"] == step_run_id
    assert recoverer.recover() == []  # nothing is recovered twice
    assert runs.stale(older_than=timedelta(0)) == []


def test_a_killed_pipeline_that_asks_for_it_is_run_again(
    backends: Backends, tmp_path: Path
) -> None:
    script, step_run_id = _start_and_kill(backends, tmp_path, "crashy-retry")
    crashed_run_id = backends.store.runs.get(step_run_id).parent_id
    pipeline = load_pipeline(f"{script}:retrying")
    recoverer = LocalRunner(
        backends.store, backends.events, heartbeat_interval=0.1, stale_after=0.3
    )
    recovered = _recover_until_found(recoverer, [pipeline])
    assert {r.id for r in recovered} == {crashed_run_id, step_run_id}

    rerun, crashed = history(backends.store, "crashy-retry").items
    assert crashed.id == crashed_run_id and crashed.status == "failed"
    assert rerun.status == "succeeded"
    assert rerun.attempt == 2 and rerun.tags["retry_of"] == crashed_run_id
    assert rerun.params == crashed.params  # the same work, again
    assert [s.status for s in rerun.steps] == ["succeeded", "succeeded"]
    [event] = backends.payloads("crashy-retry", "pipeline.crashed")
    assert event["action"] == "rerun"


def test_retry_crashed_without_the_definition_fails_and_says_why(
    sqlite_backends: Backends,
) -> None:
    runs = sqlite_backends.store.runs
    # What a dead runner leaves: a running pipeline run that asked to be retried.
    dead = runs.start("pipeline", "orphan", tags={"retry_crashed": True})
    recoverer = LocalRunner(
        sqlite_backends.store, sqlite_backends.events, heartbeat_interval=0.01, stale_after=0.02
    )
    [failed] = _recover_until_found(recoverer, [])
    assert failed.id == dead.id
    [event] = sqlite_backends.payloads("orphan", "pipeline.crashed")
    assert "its definition was not given to recover()" in event["action"]


def test_crash_reruns_stop_after_max_crash_reruns(sqlite_backends: Backends) -> None:
    runs = sqlite_backends.store.runs
    p = Pipeline("crash-loop", retry_crashed=True, max_crash_reruns=2)
    p.add_step(lambda ctx: None, name="s")
    runs.start("pipeline", "crash-loop", attempt=3, tags={"retry_crashed": True})
    recoverer = LocalRunner(
        sqlite_backends.store, sqlite_backends.events, heartbeat_interval=0.01, stale_after=0.02
    )
    _recover_until_found(recoverer, [p])
    assert len(history(sqlite_backends.store, "crash-loop").items) == 1  # not re-run
    [event] = sqlite_backends.payloads("crash-loop", "pipeline.crashed")
    assert event["action"] == "failed: already re-run 2 times (max_crash_reruns)"


def test_a_runner_declared_dead_while_alive_stops_and_records_nothing_more(
    sqlite_backends: Backends,
) -> None:
    b = sqlite_backends
    # A recoverer with a hair-trigger threshold, as if this runner had stalled.
    hasty = LocalRunner(b.store, b.events, heartbeat_interval=0.001, stale_after=0.002)
    p = Pipeline("stalled")

    @p.step
    def victim(ctx: StepContext) -> None:
        wait_until(hasty.recover, timeout=60, message="the hasty recoverer to take the run")
        wait_until(lambda: ctx.cancelled, timeout=60, message="the runner to see it lost the run")

    @p.step
    def next_step(ctx: StepContext) -> None:
        raise AssertionError("a runner that lost its run starts nothing more")

    runner = LocalRunner(b.store, b.events, heartbeat_interval=0.02, stale_after=30)
    result = runner.run(p)
    assert result.status == "failed"
    assert (result.error or "").startswith("the process running this pipeline run stopped")
    assert [s.name for s in result.steps] == ["victim"]
    assert "pipeline.finished" not in b.kinds("stalled")


def test_recover_refuses_what_is_not_a_pipeline(sqlite_backends: Backends) -> None:
    runner = LocalRunner(sqlite_backends.store, sqlite_backends.events, rng=random.Random(1))
    with pytest.raises(Exception, match="recover\\(\\) takes Pipelines"):
        runner.recover(["crashy"])  # type: ignore[list-item]
