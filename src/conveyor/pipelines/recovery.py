"""Crash recovery: runs left "running" by a process that died are failed, or re-run.

A live runner stamps its runs' heartbeat every ``heartbeat_interval``
seconds. A run still "running" whose heartbeat (or start) is older than
``stale_after`` has no live runner: the process was killed, the machine
rebooted, or the runner hung. Each is failed with an optimistic write
(``expected_version`` = the version read when it looked stale), so a
runner that was only slow and beats in between keeps its run, and two
recoverers never both act on one run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from conveyor.errors import ConcurrentUpdateError, NotFoundError
from conveyor.pipelines.events import PIPELINE_CRASHED, STEP_CRASHED
from conveyor.store.types import utcnow

if TYPE_CHECKING:
    from conveyor.pipelines.definition import Pipeline
    from conveyor.pipelines.runner import LocalRunner
    from conveyor.store.runs import Run

__all__ = ["recover"]


def recover(
    runner: LocalRunner, known: Mapping[str, Pipeline]
) -> tuple[list[Run], list[tuple[Pipeline, Run]]]:
    """Fail every stale pipeline and step run; the failed runs, and the pipelines to re-run."""
    runs = runner.runs
    older = timedelta(seconds=runner.stale_after)
    failed: list[Run] = []
    reruns: list[tuple[Pipeline, Run]] = []
    for run in runs.stale(older_than=older, kind="pipeline"):
        why = _why(run, runner.stale_after, "pipeline run")
        done = _fail(runner, run, why)
        if done is None:
            continue  # it beat meanwhile (alive after all) or another recoverer took it
        failed.append(done)
        steps: list[str] = []
        for child in runs.children(run.id):
            if child.status != "running":
                continue
            child_done = _fail(runner, child, f"its pipeline run {run.id} crashed: {why}")
            if child_done is not None:
                failed.append(child_done)
                steps.append(child.name)
                _step_event(runner, run.name, child_done)
        pipeline = known.get(run.name)
        wanted = pipeline.retry_crashed if pipeline is not None else run.tags.get("retry_crashed")
        if not wanted:
            action = "failed"
        elif pipeline is None:
            action = (
                "failed: the pipeline asks for retry_crashed, but its definition was not given "
                "to recover(); run it again yourself"
            )
        elif run.attempt > pipeline.max_crash_reruns:
            action = f"failed: already re-run {run.attempt - 1} times (max_crash_reruns)"
        else:
            action = "rerun"
            reruns.append((pipeline, done))
        runner.emit(
            PIPELINE_CRASHED,
            run.name,
            run.id,
            {
                "pipeline": run.name,
                "attempt": run.attempt,
                "error": why,
                "last_heartbeat": _last(run).isoformat(),
                "steps": steps,
                "action": action,
            },
        )
    # Step runs left running under a pipeline run that is over (finished by
    # hand, say) or gone. A step under a running pipeline run is left to that
    # run: if its runner is alive it beats both, and if it is dead the
    # pipeline run goes stale too and takes its steps with it.
    for child in runs.stale(older_than=older, kind="step"):
        if child.parent_id is not None and _running(runner, child.parent_id):
            continue
        done = _fail(runner, child, _why(child, runner.stale_after, "step run"))
        if done is not None:
            failed.append(done)
            _step_event(runner, str(child.tags.get("pipeline", "unknown")), done)
    return failed, reruns


def _running(runner: LocalRunner, run_id: str) -> bool:
    try:
        return runner.runs.get(run_id).status == "running"
    except NotFoundError:
        return False


def _last(run: Run) -> datetime:
    return run.heartbeat_at or run.started_at


def _why(run: Run, stale_after: float, what: str) -> str:
    last = _last(run)
    beat = "heartbeat" if run.heartbeat_at is not None else "heartbeat (started)"
    return (
        f"the process running this {what} stopped: last {beat} at {last.isoformat()}, more than "
        f"{stale_after:g} s before recovery at {utcnow().isoformat()}; it died or was killed"
    )


def _fail(runner: LocalRunner, run: Run, error: str) -> Run | None:
    try:
        return runner.runs.update(
            run.id, expected_version=run.version, status="failed", error=error
        )
    except ConcurrentUpdateError:
        return None


def _step_event(runner: LocalRunner, pipeline: str, step: Run) -> None:
    runner.emit(
        STEP_CRASHED,
        pipeline,
        step.parent_id or step.id,
        {
            "pipeline": pipeline,
            "step": step.name,
            "step_run_id": step.id,
            "attempt": step.attempt,
            "error": step.error,
        },
    )
