"""Scheduled materialization: ``features.materialize.cron`` as the pipeline
``features.materialize``.

::

    features:
      materialize:
        cron: "*/15 * * * *"        # UTC
        views: [customer_spend]     # default: every view
        full: false                 # true: every run rewrites everything

``conveyor pipeline schedule`` runs it next to the pipelines it is given (and the
models' retraining). The pipeline has one step, ``materialize``, which calls
:func:`~conveyor.features.materialize.materialize` through the step's project and
returns what each view did (its output ``materialized``); a run that dies is continued
from its checkpoint by the next one. A slot missed while the scheduler was down is
worth one run, not several (``catch_up="latest"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.features.settings import MaterializeSpec
    from conveyor.pipelines.context import StepContext
    from conveyor.pipelines.definition import Pipeline
    from conveyor.project import Project

__all__ = ["PIPELINE", "materialization_pipeline", "materialization_schedules"]

#: The name of the scheduled materialization's pipeline.
PIPELINE = "features.materialize"


def materialization_pipeline(settings: MaterializeSpec) -> Pipeline:
    """The pipeline ``features.materialize`` of ``settings`` (its cron, views and mode)."""
    from conveyor.pipelines.definition import Pipeline

    views = list(settings.views) or None
    pipeline = Pipeline(
        PIPELINE,
        schedule=settings.cron,
        catch_up="latest",
        description="Materialize "
        + (", ".join(views) if views else "every feature view")
        + (" in full" if settings.full else " (incremental)"),
    )

    @pipeline.step(outputs="materialized")
    def materialize(ctx: StepContext) -> list[dict[str, Any]]:
        from conveyor.features.materialize import Progress
        from conveyor.features.materialize import materialize as run

        def tell(p: Progress) -> None:
            if p.phase == "rows":
                ctx.progress(p.rows, p.total or None, f"{p.view}: chunk {p.chunks}/{p.chunk_total}")

        done = run(
            ctx.project,
            views,
            mode="full" if settings.full else "incremental",
            actor=f"pipeline:{ctx.pipeline}",
            progress=tell,
        )
        for m in done:
            ctx.log.info(
                "%s: %d rows (%s), %d written, watermark %s",
                m.view,
                m.rows,
                m.mode,
                m.written,
                m.watermark_after,
            )
        return [m.to_dict() for m in done]

    return pipeline


def materialization_schedules(project: Project) -> list[Pipeline]:
    """``[features.materialize]`` when the spec gives ``features.materialize.cron``, else
    nothing."""
    from conveyor.features.settings import features_of

    settings = features_of(project.spec).materialize
    if settings.cron is None:
        return []
    return [materialization_pipeline(settings)]
