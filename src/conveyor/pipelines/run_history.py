"""Run history: a pipeline's past runs, newest first, each with its steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.pipelines.results import PipelineRun, pipeline_run_from
from conveyor.store.paging import Page

if TYPE_CHECKING:
    from conveyor.store.database import MetadataStore
    from conveyor.store.runs import Run, RunStatus

__all__ = ["history", "runs_with_steps"]


def history(
    store: MetadataStore,
    pipeline_name: str,
    *,
    limit: int = 20,
    cursor: str | None = None,
    status: RunStatus | None = None,
) -> Page[PipelineRun]:
    """Runs of ``pipeline_name`` newest first, ``limit`` a page; pass ``next_cursor`` for more.

    Each run carries its steps (status, attempts, durations, errors): two
    queries a page, whatever its size.
    """
    page = store.runs.list(
        kind="pipeline", name=pipeline_name, status=status, limit=limit, cursor=cursor
    )
    return Page(items=runs_with_steps(store, page.items), next_cursor=page.next_cursor)


def runs_with_steps(store: MetadataStore, runs: Sequence[Run]) -> list[PipelineRun]:
    """Pipeline runs (``kind="pipeline"`` runs) with their steps, in one query for the steps."""
    children = store.runs.children_of([run.id for run in runs])
    return [pipeline_run_from(run, children.get(run.id, [])) for run in runs]
