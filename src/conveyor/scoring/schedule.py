"""Scheduled batch scoring: each job of ``scoring.jobs`` as the pipeline ``scoring.NAME``.

::

    scoring:
      jobs:
        - name: nightly
          model: fraud@champion          # resolved at each run: the alias's holder then
          input: s3://lake/customers/
          output: s3://lake/scores/{date}/
          cron: "0 2 * * *"              # UTC: recompute everything nightly

``conveyor pipeline schedule`` runs them next to the pipelines it is given. The
pipeline has one step, ``score``, which calls :func:`~conveyor.scoring.batch.score_batch`
through the step's project and returns the run's summary (its output ``scored``). A
slot missed while the scheduler was down is worth one run, not several
(``catch_up="latest"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.pipelines.context import StepContext
    from conveyor.pipelines.definition import Pipeline
    from conveyor.project import Project
    from conveyor.scoring.settings import ScoringJob

__all__ = ["PIPELINE_PREFIX", "scoring_pipeline", "scoring_schedules"]

#: Scheduled jobs' pipelines are named ``scoring.<job name>``.
PIPELINE_PREFIX = "scoring."


def scoring_pipeline(job: ScoringJob) -> Pipeline:
    """The pipeline ``scoring.NAME`` of one job."""
    from conveyor.pipelines.definition import Pipeline

    pipeline = Pipeline(
        PIPELINE_PREFIX + job.name,
        schedule=job.cron,
        catch_up="latest",
        description=f"Score {job.input} with {job.model} into {job.output}",
    )

    @pipeline.step(outputs="scored")
    def score(ctx: StepContext) -> dict[str, Any]:
        from conveyor.scoring.batch import Progress, score_batch

        def tell(p: Progress) -> None:
            ctx.progress(p.partitions_done, p.partitions, f"{p.rows:,} rows")

        result = score_batch(
            ctx.project,
            job.model,
            input=job.input,
            output=job.output,
            query=job.query,
            table=job.table,
            key=job.key,
            engine=job.engine,
            workers=job.workers,
            actor=f"pipeline:{ctx.pipeline}",
            progress=tell,
        )
        ctx.log.info(
            "run %s: %s@%s scored %d of %d rows (%d rejected)",
            result.run_id,
            result.model,
            result.version,
            result.scored,
            result.rows,
            result.rejected,
        )
        return result.to_dict()

    return pipeline


def scoring_schedules(project: Project) -> list[Pipeline]:
    """One pipeline per job of ``scoring.jobs`` (none when there is none)."""
    from conveyor.scoring.settings import scoring_of

    return [scoring_pipeline(job) for job in scoring_of(project.spec).jobs]
