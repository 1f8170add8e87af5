"""Pipelines: steps with declared inputs and outputs, retries, timeouts, schedules and triggers.

::

    from conveyor.pipelines import LocalRunner, OnEvent, OnNewVersion, Pipeline

    nightly = Pipeline("nightly", schedule="0 2 * * *", triggers=[OnNewVersion("sales")])
    on_drift = Pipeline("retrain", triggers=[OnEvent(["drift.detected"])])

    @nightly.step(outputs=("rows",), retries=3, timeout=300)
    def extract(ctx):
        ...

    LocalRunner(project.store, project.events, project.artifacts).run(nightly)
    runner_for("local", project).run(nightly)     # a runner by name (see runners.py)

The public names load on first use, so ``import conveyor.pipelines`` pulls
in neither SQLAlchemy nor croniter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor._lazy import lazy_exports

if TYPE_CHECKING:
    from conveyor.pipelines.context import StepContext
    from conveyor.pipelines.definition import Pipeline
    from conveyor.pipelines.errors import (
        PipelineDefinitionError,
        PipelineFailedError,
        StepCancelledError,
        StepOutputError,
        StepTimeoutError,
    )
    from conveyor.pipelines.loading import load_pipeline, load_pipelines
    from conveyor.pipelines.results import PipelineRun, StepAttempt, StepRun
    from conveyor.pipelines.run_history import history
    from conveyor.pipelines.runner import LocalRunner
    from conveyor.pipelines.runners import RUNNERS, Runner, runner_for
    from conveyor.pipelines.scheduler import Firing, Scheduler
    from conveyor.pipelines.step import Step
    from conveyor.pipelines.triggers import OnEvent, OnNewVersion, Trigger, TriggerFiring

__all__ = [
    "RUNNERS",
    "Firing",
    "LocalRunner",
    "OnEvent",
    "OnNewVersion",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineFailedError",
    "PipelineRun",
    "Runner",
    "Scheduler",
    "Step",
    "StepAttempt",
    "StepCancelledError",
    "StepContext",
    "StepOutputError",
    "StepRun",
    "StepTimeoutError",
    "Trigger",
    "TriggerFiring",
    "history",
    "load_pipeline",
    "load_pipelines",
    "runner_for",
]

_HOMES = {
    "RUNNERS": "runners",
    "Runner": "runners",
    "runner_for": "runners",
    "Firing": "scheduler",
    "LocalRunner": "runner",
    "OnEvent": "triggers",
    "OnNewVersion": "triggers",
    "Pipeline": "definition",
    "PipelineDefinitionError": "errors",
    "PipelineFailedError": "errors",
    "PipelineRun": "results",
    "Scheduler": "scheduler",
    "Step": "step",
    "StepAttempt": "results",
    "StepCancelledError": "errors",
    "StepContext": "context",
    "StepOutputError": "errors",
    "StepRun": "results",
    "StepTimeoutError": "errors",
    "Trigger": "triggers",
    "TriggerFiring": "triggers",
    "history": "run_history",
    "load_pipeline": "loading",
    "load_pipelines": "loading",
}


__getattr__, __dir__ = lazy_exports(__name__, {k: f".{v}" for k, v in _HOMES.items()}, __all__)
