"""The scoring section of ``conveyor.yaml``: ``scoring:``.

::

    scoring:
      engine: local             # local | ray
      workers: null             # worker processes (null: one per core; 0: in-process)
      chunk_rows: 100000        # rows scored at a time (bounded memory)
      ray_address: null         # ray://head:10001, auto; null: a local Ray for the run
      jobs:                     # scheduled by `conveyor pipeline schedule`
        - name: nightly
          model: fraud@champion
          input: s3://lake/customers/
          output: s3://lake/scores/{date}/
          cron: "0 2 * * *"     # UTC

Every field can be set from the environment (``CONVEYOR_SCORING__WORKERS=8``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["SECTIONS", "ScoringJob", "ScoringSpec", "scoring_of"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ScoringJob(BaseModel):
    """A batch scoring the scheduler runs on a cron (pipeline ``scoring.NAME``)."""

    model_config = _STRICT

    name: str = Field(description="The job's name: its pipeline is scoring.NAME.")
    model: str = Field(description="MODEL, MODEL@ALIAS or MODEL@N (resolved at each run).")
    input: str = Field(description="A file, folder, fsspec URL, sql:URL or dataset:NAME@N.")
    output: str = Field(
        description="A folder (fsspec URL; {date} is the run's UTC date) or sql:URL."
    )
    cron: str = Field(description="Cron expression (UTC), e.g. '0 2 * * *'.")
    query: str | None = Field(None, description="The query of a sql: input.")
    table: str | None = Field(None, description="The table of a sql: output.")
    key: str | None = Field(None, description="The key column of a sql: output (upsert).")
    engine: Literal["local", "ray"] | None = Field(
        None, description="local or ray (default: scoring.engine)."
    )
    workers: int | None = Field(
        None, ge=0, le=1024, description="Worker processes (default: scoring.workers)."
    )


class ScoringSpec(BaseModel):
    """Batch scoring: its engine, workers and chunk size, and its scheduled jobs."""

    model_config = _STRICT

    engine: Literal["local", "ray"] = Field(
        "local", description="local: worker processes on this machine; ray: Ray Data."
    )
    workers: int | None = Field(
        None,
        ge=0,
        le=1024,
        description="Local worker processes (or Ray actors); None: one per core; 0: score in "
        "the calling process.",
    )
    chunk_rows: int = Field(
        100_000, ge=1, le=10_000_000, description="Rows read and scored at a time."
    )
    ray_address: str | None = Field(
        None, description="Ray address (ray://host:10001, auto); None: a local Ray per run."
    )
    jobs: list[ScoringJob] = Field(
        default_factory=list, description="Scheduled batch scorings (conveyor pipeline schedule)."
    )


SECTIONS: dict[str, Any] = {
    "scoring": (
        ScoringSpec,
        Field(
            default_factory=ScoringSpec,
            description="Batch scoring: engine, workers, chunk size and scheduled jobs.",
        ),
    ),
}


def scoring_of(spec: ProjectSpec) -> ScoringSpec:
    """The ``scoring:`` section (defaults when the spec has none)."""
    found = getattr(spec, "scoring", None)
    return found if isinstance(found, ScoringSpec) else ScoringSpec()
