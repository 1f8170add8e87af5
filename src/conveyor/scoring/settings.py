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
      stream:                   # conveyor score stream
        batch: 256              # messages in flight per consumer (fetched, scored, acked)
        key_field: user_id      # the entity: sticky routes, windows
        time_field: ts          # event time (epoch seconds or ISO 8601)

Every field can be set from the environment (``CONVEYOR_SCORING__WORKERS=8``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["SECTIONS", "ScoringJob", "ScoringSpec", "StreamSpec", "scoring_of"]

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


class StreamSpec(BaseModel):
    """Stream scoring (``conveyor score stream``): in flight, retries, fields."""

    model_config = _STRICT

    batch: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Messages a consumer holds at once (fetched, scored, written, acked): "
        "its in-flight bound.",
    )
    wait: float = Field(
        1.0, gt=0, le=60, description="Seconds a fetch waits for the first message."
    )
    key_field: str | None = Field(
        None, description="The message field naming the entity: sticky routes, windows."
    )
    time_field: str | None = Field(
        None, description="The message field holding the event time (epoch s or ISO 8601)."
    )
    max_deliver: int = Field(
        10,
        ge=1,
        le=1000,
        description="Deliveries of a message a sink keeps refusing before it is dead-lettered.",
    )
    backoff: float = Field(
        0.5, gt=0, le=3600, description="Seconds before the first redelivery (doubled each)."
    )
    backoff_max: float = Field(
        30.0, gt=0, le=86_400, description="The longest wait before a redelivery."
    )
    route_poll: float = Field(
        1.0, gt=0, le=3600, description="Seconds between reads of the model's route."
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
    stream: StreamSpec = Field(
        default_factory=StreamSpec, description="Stream scoring: in flight, retries, fields."
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
