"""Scheduled concept drift: ``monitoring.quality.concept_drift.cron`` as the pipeline
``monitoring.concept_drift``.

::

    monitoring:
      quality:
        concept_drift: {cron: "0 * * * *", window: 1d}

``conveyor pipeline schedule`` runs it next to the other pipelines. Its one step,
``judge``, judges every model named in ``monitoring.quality.models`` (else every model
with predictions in the window) with :func:`~conveyor.monitoring.quality.concept_drift`
and records each judgment (:func:`~conveyor.monitoring.quality.record_concept_drift`: a
report, and ``drift.detected`` on drift, which ``retrain.on_events`` listens for). A model
that cannot be judged (too few labels) is listed with its status and stops nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.pipelines.context import StepContext
    from conveyor.pipelines.definition import Pipeline
    from conveyor.project import Project

__all__ = ["PIPELINE", "concept_drift_pipeline", "concept_drift_schedules", "judge_models"]

PIPELINE = "monitoring.concept_drift"


def judge_models(
    project: Project, *, at: datetime | None = None, actor: str | None = None
) -> dict[str, Any]:
    """Judge and record concept drift for each model (see the module)."""
    from conveyor.durations import parse_duration
    from conveyor.monitoring.quality import concept_drift, record_concept_drift
    from conveyor.monitoring.settings import monitoring_of

    spec = monitoring_of(project.spec).quality
    at = at or datetime.now(UTC)
    window = parse_duration(spec.concept_drift.window, "monitoring.quality.concept_drift.window")
    models = sorted(spec.models) or _predicting(project, at - window, at)
    results: dict[str, Any] = {}
    for model in models:
        try:
            judged = concept_drift(project, model, at=at)
        except ConveyorError as exc:
            results[model] = {"error": exc.to_dict()}
            continue
        result = judged.to_dict()
        if judged.status != "insufficient":
            result["report_id"] = record_concept_drift(project, judged, actor=actor)
        results[model] = result
    return {
        "at": at.isoformat(),
        "models": results,
        "detected": sorted(m for m, r in results.items() if r.get("detected")),
    }


def concept_drift_pipeline(cron: str | None) -> Pipeline:
    """The pipeline ``monitoring.concept_drift`` on ``cron``: one step, ``judge``."""
    from conveyor.pipelines.definition import Pipeline

    pipeline = Pipeline(
        PIPELINE,
        schedule=cron,
        catch_up="latest",
        description="Judge concept drift from labelled feedback and record it",
    )

    @pipeline.step(outputs="concept_drift")
    def judge(ctx: StepContext) -> dict[str, Any]:
        out = judge_models(ctx.project, actor=f"pipeline:{ctx.pipeline}")
        for model, result in out["models"].items():
            if "error" in result:
                ctx.log.warning("%s: %s", model, result["error"]["message"])
            else:
                ctx.log.info("%s: %s (%s)", model, result["status"], result["detail"])
        return out

    return pipeline


def concept_drift_schedules(project: Project) -> list[Pipeline]:
    """``[monitoring.concept_drift]`` when the spec gives its ``cron``."""
    from conveyor.monitoring.settings import monitoring_of

    cron = monitoring_of(project.spec).quality.concept_drift.cron
    if cron is None:
        return []
    return [concept_drift_pipeline(cron)]


def _predicting(project: Project, since: datetime, until: datetime) -> list[str]:
    from conveyor.monitoring.query import MonitorQuery

    rows = (
        MonitorQuery(project)
        .sql(
            "SELECT DISTINCT subject FROM events WHERE kind = 'prediction' ORDER BY subject",
            kinds=["prediction"],
            since=since,
            until=until,
        )
        .to_pylist()
    )
    return [str(r["subject"]) for r in rows if r["subject"]]
