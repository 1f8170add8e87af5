"""Scheduled compaction: ``monitoring.compaction.cron`` as the pipeline ``monitoring.compact``.

::

    monitoring:
      compaction:
        cron: "*/10 * * * *"        # UTC

``conveyor pipeline schedule`` runs it next to the pipelines it is given. The pipeline
has one step, ``compact``, which calls :func:`~conveyor.monitoring.compaction.compact`
through the step's project (its output ``compaction``: events, files, checkpoint). A run
that dies leaves the copy as it was after its last committed batch; the next one goes on
from there. A slot missed while the scheduler was down is worth one run, not several.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.monitoring.settings import CompactionSpec
    from conveyor.pipelines.context import StepContext
    from conveyor.pipelines.definition import Pipeline
    from conveyor.project import Project

__all__ = ["PIPELINE", "compaction_pipeline", "compaction_schedules"]

#: The name of the scheduled compaction's pipeline.
PIPELINE = "monitoring.compact"


def compaction_pipeline(settings: CompactionSpec) -> Pipeline:
    """The pipeline ``monitoring.compact`` on ``settings.cron``."""
    from conveyor.pipelines.definition import Pipeline

    pipeline = Pipeline(
        PIPELINE,
        schedule=settings.cron,
        catch_up="latest",
        description="Copy the event log's new events into its Parquet copy",
    )

    @pipeline.step(outputs="compaction")
    def compact(ctx: StepContext) -> dict[str, Any]:
        from conveyor.monitoring.compaction import Progress
        from conveyor.monitoring.compaction import compact as run

        def tell(p: Progress) -> None:
            if p.phase == "batch":
                ctx.progress(p.events, None, f"{p.files} files; through seq {p.last_seq}")

        done = run(ctx.project, progress=tell, actor=f"pipeline:{ctx.pipeline}")
        ctx.log.info(
            "%d events into %d files; checkpoint %d", done.events, done.files, done.last_seq
        )
        result = done.to_dict()
        result.pop("paths")
        return result

    return pipeline


def compaction_schedules(project: Project) -> list[Pipeline]:
    """``[monitoring.compact]`` when the spec gives ``monitoring.compaction.cron``."""
    from conveyor.monitoring.settings import monitoring_of

    settings = monitoring_of(project.spec).compaction
    if settings.cron is None:
        return []
    return [compaction_pipeline(settings)]
