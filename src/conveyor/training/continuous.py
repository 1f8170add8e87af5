"""Continuous training: each model's ``retrain`` spec as a scheduled pipeline.

::

    models:
      fraud:
        train: model:fit
        dataset: transactions
        ...
        retrain:
          cron: "0 3 * * *"                  # every night at 03:00 UTC
          on_new_data: true                  # when transactions gets a new version
          on_events: [drift.detected]        # an event about the model or its dataset
          incremental: false                 # true: the champion continues with partial_fit

``conveyor pipeline schedule`` runs these next to the pipelines it is given::

    from conveyor.training.continuous import retraining_schedules

    scheduler = Scheduler(runner, [*my_pipelines, *retraining_schedules(project)])

Each model with a ``retrain`` trigger becomes the pipeline ``retrain.NAME``
with one step, ``train``, that calls :func:`~conveyor.training.flow.train_candidate`
on the dataset's latest version: a new version is registered, judged by the
model's gates and becomes ``challenger`` if they pass (``champion`` only with
``auto_promote``). The scheduler guarantees each cron slot, data arrival and
batch of events starts one retraining, even with several schedulers running.

What is recorded
    The pipeline run's ``params["triggers"]`` holds the full reasons (the
    slot, the dataset version, the triggering event ids); the training
    run's and the model version's ``trigger`` tag a short label of them
    (``schedule``, ``new_data:transactions@4``, ``event:drift.detected``);
    the ``model.candidate`` event carries the label and the verdict. A
    candidate that fails its gates is a normal outcome (the run succeeds,
    the step's ``candidate`` output and the event say it failed); an error
    while training fails the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.pipelines.context import StepContext
    from conveyor.pipelines.definition import Pipeline
    from conveyor.pipelines.triggers import Trigger
    from conveyor.project import Project
    from conveyor.training.settings import ModelSpec

__all__ = ["PIPELINE_PREFIX", "retraining_pipeline", "retraining_schedules", "trigger_label"]

#: A model's retraining pipeline is named ``retrain.NAME``.
PIPELINE_PREFIX = "retrain."


def retraining_triggers(name: str, spec: ModelSpec) -> list[Trigger]:
    """The non-clock triggers of ``spec.retrain``: new dataset versions, events."""
    from conveyor.pipelines.triggers import OnEvent, OnNewVersion

    triggers: list[Trigger] = []
    if spec.retrain.on_new_data:
        triggers.append(OnNewVersion(spec.dataset))
    if spec.retrain.on_events:
        # Only events about this model (an alert's retrain action, a live drift check) or
        # about its data set (a data drift check): another model's alert retrains it not.
        subjects = [name] if spec.dataset in (None, name) else [name, spec.dataset]
        try:
            triggers += [OnEvent(spec.retrain.on_events, subject=s) for s in subjects]
        except InvalidInputError as exc:
            where = f"models.{name}.retrain.on_events"
            raise InvalidInputError(f"{where}: {exc.message}", field=where) from exc
    return triggers


def retraining_pipeline(name: str, spec: ModelSpec) -> Pipeline:
    """The pipeline ``retrain.NAME``: ``spec.retrain``'s cron and triggers, one ``train`` step.

    The step needs a runner that knows the project
    (``LocalRunner.for_project(project)``, as the CLI builds it). It can also be
    run by hand with ``LocalRunner.run``; its label is then ``params["trigger"]``
    or ``manual``.
    """
    from conveyor.pipelines.definition import Pipeline

    pipeline = Pipeline(
        f"{PIPELINE_PREFIX}{name}",
        schedule=spec.retrain.cron,
        triggers=retraining_triggers(name, spec),
        catch_up="latest",  # a retraining missed while down is worth one, not several
        description=f"Retrain model {name!r} on the latest version of {spec.dataset!r}",
    )

    @pipeline.step(outputs="candidate")
    def train(ctx: StepContext) -> dict[str, Any]:
        from conveyor.training.flow import train_candidate

        candidate = train_candidate(
            ctx.project,
            name,
            actor=f"pipeline:{ctx.pipeline}",
            trigger=trigger_label(ctx.params),
            spec=spec,  # the spec this pipeline was built from is the one that trains
        )
        ctx.log.info("%s: %s", candidate.version.ref, candidate.report.verdict)
        return candidate.to_dict()

    return pipeline


def retraining_schedules(project: Project) -> list[Pipeline]:
    """One retraining pipeline per model whose ``retrain`` has a cron, events or new data.

    Models without any of them are left out (they train only when asked).
    """
    pipelines = []
    from conveyor.training.settings import models_of

    for name, spec in models_of(project.spec).items():
        retrain = spec.retrain
        if retrain.cron is None and not retrain.on_events and not retrain.on_new_data:
            continue
        pipelines.append(retraining_pipeline(name, spec))
    return pipelines


def trigger_label(params: Mapping[str, Any]) -> str:
    """A short label of why a retraining runs, from the scheduler's ``params["triggers"]``."""
    reasons = params.get("triggers")
    if not isinstance(reasons, Sequence) or isinstance(reasons, str) or not reasons:
        explicit = params.get("trigger")
        return explicit if isinstance(explicit, str) and explicit else "manual"
    labels = []
    for reason in reasons:
        kind = reason.get("kind") if isinstance(reason, Mapping) else None
        if kind == "new_version":
            labels.append(f"new_data:{reason.get('dataset')}@{reason.get('version')}")
        elif kind == "event":
            labels.append(f"event:{','.join(reason.get('kinds') or ())}")
        else:
            labels.append(str(kind))
    return "+".join(labels)
