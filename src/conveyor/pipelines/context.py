"""``ctx``: what a step function gets as its first argument."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, overload

from conveyor.capability import EventKind
from conveyor.errors import InvalidInputError
from conveyor.pipelines.errors import StepCancelledError

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.data.layer import DataLayer
    from conveyor.events.log import EventLog
    from conveyor.events.schema import Event
    from conveyor.project import Project
    from conveyor.store.database import MetadataStore

__all__ = ["ProgressCallback", "StepContext"]

#: Called with (step, done, total, message) when a step reports progress.
ProgressCallback = Callable[[str, float, float | None, str | None], None]


class StepContext:
    """The run a step attempt belongs to, and the backends it may use.

    ``run_id`` is this attempt's own run (kind ``step``); ``pipeline_run_id``
    the pipeline run it is part of. After the attempt was given up (timed
    out, interrupted, or its run taken over by recovery) :attr:`cancelled` is
    true and every write through the context raises StepCancelledError, so a
    thread that outlives its timeout changes nothing more. A long step
    should look at :attr:`cancelled` (or call :meth:`check_cancelled`) now
    and then and stop.
    """

    def __init__(
        self,
        *,
        pipeline: str,
        pipeline_run_id: str,
        step: str,
        run_id: str,
        attempt: int,
        params: Mapping[str, Any],
        store: MetadataStore,
        events: EventLog,
        artifacts: ArtifactStore | None,
        cancel: threading.Event,
        progress: ProgressCallback | None = None,
        project: Project | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.pipeline_run_id = pipeline_run_id
        self.step = step
        self.run_id = run_id
        self.attempt = attempt
        self.params = params
        self.store = store
        self.events = events
        self._artifacts = artifacts
        self._project = project
        self._cancel = cancel
        self._progress = progress
        self.log = logging.getLogger(f"conveyor.pipelines.{pipeline}.{step}")

    def __repr__(self) -> str:
        return f"<StepContext {self.pipeline}.{self.step} attempt {self.attempt} run {self.run_id}>"

    @property
    def project(self) -> Project:
        """The project the runner works for (``LocalRunner.for_project``; the CLI's does)."""
        if self._project is None:
            raise InvalidInputError(
                f"step {self.step!r} uses its project, but the runner has none: "
                "LocalRunner.for_project(project) (the CLI builds it so)",
                field="project",
            )
        return self._project

    @property
    def data(self) -> DataLayer:
        """The project's data layer (ingest, versions...)."""
        data: DataLayer = self.project.data
        return data

    @property
    def artifacts(self) -> ArtifactStore:
        if self._artifacts is None:
            raise InvalidInputError(
                f"step {self.step!r} asked for the artifact store, but the runner has none: "
                "LocalRunner(store, events, artifacts=...)",
                field="artifacts",
            )
        return self._artifacts

    @property
    def cancelled(self) -> bool:
        """True once the runner gave this attempt up."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise StepCancelledError if the runner gave this attempt up."""
        if self._cancel.is_set():
            raise StepCancelledError(
                f"step {self.step!r} attempt {self.attempt} (run {self.run_id}) was given up "
                "by its runner (timed out, interrupted or taken over); it may not write",
                step=self.step,
                run_id=self.run_id,
            )

    @overload
    def emit(
        self, kind: str, payload: Mapping[str, Any] | None = None, *, durable: bool = False
    ) -> Event: ...

    @overload
    def emit(self, kind: EventKind, payload: Mapping[str, Any] | None = None) -> Event | None: ...

    def emit(
        self,
        kind: EventKind | str,
        payload: Mapping[str, Any] | None = None,
        *,
        durable: bool = False,
    ) -> Event | None:
        """Write an event about this pipeline, tagged with the run and step.

        ``kind`` is a free name (a pipeline's own: ``durable=True`` returns once
        it is committed) or a catalogued :class:`~conveyor.capability.EventKind`,
        whose fields must then include ``run_id``, ``step`` and ``step_run_id``
        and which is written as durably as it says (None: telemetry shed).
        """
        self.check_cancelled()
        body = {
            **(payload or {}),
            "run_id": self.pipeline_run_id,
            "step": self.step,
            "step_run_id": self.run_id,
        }
        if isinstance(kind, EventKind):
            if durable:
                raise InvalidInputError(
                    f"event kind {kind.name!r} is written as its durability says "
                    f"({kind.durability}); durable= is for free kinds",
                    field="durable",
                )
            return self.events.record(
                kind, subject=self.pipeline, payload=body, trace_id=self.pipeline_run_id
            )
        return self.events.emit(
            kind,
            subject=self.pipeline,
            payload=body,
            trace_id=self.pipeline_run_id,
            durable=durable,
        )

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Say how far the step is (``done`` of ``total``); the CLI shows it."""
        self.check_cancelled()
        if self._progress is not None:
            self._progress(self.step, done, total, message)

    def record_lineage(self, dataset_version_id: str, role: str = "input") -> None:
        """Record that this step attempt read (``input``) or wrote (``output``) a dataset version.

        Recording the same link twice is a no-op; NotFoundError if the
        dataset version does not exist.
        """
        from conveyor.data.lineage import record_lineage

        self.check_cancelled()
        record_lineage(self.store, self.run_id, dataset_version_id, role, who=f"step {self.step!r}")
