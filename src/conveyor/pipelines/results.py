"""What a pipeline run was: its status and each step's attempts, read back from the ``runs`` table.

A pipeline run is a run of kind ``pipeline``; each attempt of each step is
a run of kind ``step`` whose ``parent_id`` is the pipeline run and whose
``name`` is the step. A skipped step is one ``cancelled`` step run whose
error says why. These snapshots are built from those rows, so what
:meth:`LocalRunner.run` returns and what :func:`history` lists later are
the same thing (``outputs``, the values the steps returned, exist only on
the object ``run`` returns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.pipelines.errors import PipelineFailedError

if TYPE_CHECKING:
    from conveyor.store.runs import Run, RunStatus

__all__ = ["PipelineRun", "StepAttempt", "StepRun", "pipeline_run_from"]


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds()


@dataclass(frozen=True, slots=True)
class StepAttempt:
    """One attempt of a step: its own run in the store."""

    run_id: str
    attempt: int
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None
    error: str | None
    #: Never started: recorded (as cancelled) because an upstream step failed.
    skipped: bool = False

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (None while running)."""
        return _seconds(self.started_at, self.ended_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "attempt": self.attempt,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "duration": self.duration,
            "error": self.error,
            "skipped": self.skipped,
        }


@dataclass(frozen=True, slots=True)
class StepRun:
    """A step within one pipeline run: its attempts, oldest first; status is the last one's."""

    name: str
    attempts: tuple[StepAttempt, ...]

    @property
    def status(self) -> RunStatus:
        return self.attempts[-1].status

    @property
    def error(self) -> str | None:
        return self.attempts[-1].error

    @property
    def skipped(self) -> bool:
        """Never attempted: cancelled because an upstream step failed."""
        return self.attempts[-1].skipped

    @property
    def started_at(self) -> datetime:
        return self.attempts[0].started_at

    @property
    def ended_at(self) -> datetime | None:
        return self.attempts[-1].ended_at

    @property
    def duration(self) -> float | None:
        """Seconds from the first attempt's start to the last one's end (backoff included)."""
        return _seconds(self.started_at, self.ended_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "attempts": [a.to_dict() for a in self.attempts],
            "duration": self.duration,
            "error": self.error,
            "skipped": self.skipped,
        }


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """One run of a pipeline, with its steps in the order they ran."""

    id: str
    pipeline: str
    status: RunStatus
    params: dict[str, Any]
    tags: dict[str, Any]
    attempt: int
    started_at: datetime
    ended_at: datetime | None
    error: str | None
    steps: tuple[StepRun, ...]
    #: What each step returned, by output name; only on the object the runner returns.
    outputs: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def duration(self) -> float | None:
        return _seconds(self.started_at, self.ended_at)

    def step(self, name: str) -> StepRun:
        """The step called ``name``; KeyError naming the steps there are."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(
            f"pipeline run {self.id} has no step {name!r}; steps: "
            f"{', '.join(s.name for s in self.steps) or '(none)'}"
        )

    def raise_for_status(self) -> PipelineRun:
        """``self`` if the run succeeded, else PipelineFailedError with its error."""
        if self.status != "succeeded":
            raise PipelineFailedError(
                f"pipeline {self.pipeline!r} run {self.id} {self.status}: {self.error}",
                run=self,
                run_id=self.id,
                status=self.status,
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (without ``outputs``)."""
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "status": self.status,
            "params": self.params,
            "tags": self.tags,
            "attempt": self.attempt,
            "started_at": self.started_at.isoformat(),
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "duration": self.duration,
            "error": self.error,
            "steps": [s.to_dict() for s in self.steps],
        }


def pipeline_run_from(
    run: Run, children: Sequence[Run], outputs: Mapping[str, Any] | None = None
) -> PipelineRun:
    """A :class:`PipelineRun` from the pipeline's run and its step runs (oldest first)."""
    attempts: dict[str, list[StepAttempt]] = {}
    for child in children:
        attempts.setdefault(child.name, []).append(
            StepAttempt(
                run_id=child.id,
                attempt=child.attempt,
                status=child.status,
                started_at=child.started_at,
                ended_at=child.ended_at,
                error=child.error,
                skipped=bool(child.tags.get("skipped")),
            )
        )
    steps = tuple(
        StepRun(name, tuple(sorted(tries, key=lambda a: a.attempt)))
        for name, tries in attempts.items()
    )
    return PipelineRun(
        id=run.id,
        pipeline=run.name,
        status=run.status,
        params=run.params,
        tags=run.tags,
        attempt=run.attempt,
        started_at=run.started_at,
        ended_at=run.ended_at,
        error=run.error,
        steps=steps,
        outputs=dict(outputs or {}),
    )
