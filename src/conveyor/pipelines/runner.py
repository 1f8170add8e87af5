"""``LocalRunner``: runs a pipeline in this process and records every step of it.

::

    runner = LocalRunner(project.store, project.events, project.artifacts)
    result = runner.run(daily, params={"day": "2026-11-26"})
    result.raise_for_status()

Steps run one at a time, in a topological order of the graph (among steps
ready together, the order they were declared). Sequential on purpose: a
local runner shares one process, one GIL and one SQLite writer; parallel
branches belong to a distributed runner.

What is recorded
    A run of kind ``pipeline`` for the pipeline, and a run of kind ``step``
    (``parent_id`` = the pipeline run, ``attempt`` = 1, 2, ...) for every
    attempt of every step. While a step runs, both runs' heartbeats are
    stamped every ``heartbeat_interval`` seconds (also during a retry's
    backoff); :meth:`LocalRunner.recover` treats a run whose heartbeat is
    older than ``stale_after`` as left behind by a dead process.

Failures
    A failed attempt whose error is in the step's ``retry_on`` is retried
    after a random wait (full jitter, see :meth:`Step.delay`) until its
    retries are used up; a wrong return value (StepOutputError) is a bug and
    is never retried. A step that finally fails fails the pipeline; its
    dependents are recorded as cancelled with the reason and never start.
    Independent steps still run unless the pipeline says ``fail_fast``. A
    timeout is a failure like any other (see ``execution.py`` for what
    happens to the thread).

Events (subject = the pipeline, trace_id = the pipeline run id, audit: see
``pipelines/events.py``)
    ``pipeline.started``, ``step.started``, ``step.retrying`` (a failed
    attempt that will be tried again), ``step.succeeded``, ``step.failed``
    (final), ``step.skipped``, ``step.cancelled`` (interrupted),
    ``pipeline.finished`` (status, duration, error, each step's status);
    recovery writes ``pipeline.crashed`` and ``step.crashed``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConcurrentUpdateError, ConflictError, ConveyorError, InvalidInputError
from conveyor.pipelines.context import ProgressCallback, StepContext
from conveyor.pipelines.definition import Pipeline
from conveyor.pipelines.events import (
    PIPELINE_FINISHED,
    PIPELINE_STARTED,
    STEP_CANCELLED,
    STEP_FAILED,
    STEP_RETRYING,
    STEP_SKIPPED,
    STEP_STARTED,
    STEP_SUCCEEDED,
)
from conveyor.pipelines.execution import RunLostError, describe, run_attempt, trace
from conveyor.pipelines.results import PipelineRun, pipeline_run_from
from conveyor.pipelines.runners import Listener
from conveyor.pipelines.step import Step

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.capability import EventKind
    from conveyor.events.log import EventLog
    from conveyor.project import Project
    from conveyor.store.database import MetadataStore
    from conveyor.store.runs import Run, RunRepository, RunStatus

__all__ = ["LocalRunner"]

log = logging.getLogger("conveyor.pipelines")


class LocalRunner:
    """Runs pipelines in this process, persisting runs in ``store`` and events in ``events``.

    It is the ``local`` :class:`~conveyor.pipelines.runners.Runner`
    (``runner_for("local", project)``).

    ``sleep`` and ``rng`` are the backoff's clock and dice (inject them to
    make retries fast and reproducible in tests); ``project`` is stamped on
    the runs it records; ``listener`` is told of every event of every run
    (unless a run is given its own).
    """

    def __init__(
        self,
        store: MetadataStore,
        events: EventLog,
        artifacts: ArtifactStore | None = None,
        *,
        heartbeat_interval: float = 5.0,
        stale_after: float = 60.0,
        project: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        listener: Listener | None = None,
        owner: Project | None = None,
    ) -> None:
        for field, value in (
            ("heartbeat_interval", heartbeat_interval),
            ("stale_after", stale_after),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidInputError(
                    f"{field} must be a number of seconds > 0, got {value!r}", field=field
                )
        if stale_after <= heartbeat_interval:
            raise InvalidInputError(
                f"stale_after ({stale_after:g} s) must be longer than heartbeat_interval "
                f"({heartbeat_interval:g} s), or live runs would look crashed",
                field="stale_after",
            )
        self.store = store
        self.events = events
        self.artifacts = artifacts
        self.heartbeat_interval = float(heartbeat_interval)
        self.stale_after = float(stale_after)
        self.project = project
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self.listener = listener
        #: The project the steps see as ``ctx.project`` (and ``ctx.data``), if any.
        self.owner = owner
        self._known: dict[str, Pipeline] = {}

    @classmethod
    def for_project(cls, project: Project, **options: Any) -> LocalRunner:
        """A runner over a project's backends; its steps get ``ctx.project`` and ``ctx.data``."""
        return cls(
            project.store,
            project.events,
            project.artifacts,
            project=project.name,
            owner=project,
            **options,
        )

    def __repr__(self) -> str:
        return f"<LocalRunner store={self.store!r}>"

    @property
    def runs(self) -> RunRepository:
        return self.store.runs

    # -- running ------------------------------------------------------------------

    def run(
        self,
        pipeline: Pipeline,
        params: Mapping[str, Any] | None = None,
        *,
        listener: Listener | None = None,
        progress: ProgressCallback | None = None,
    ) -> PipelineRun:
        """Run every step of ``pipeline`` once (plus retries); the recorded run.

        ``params`` (JSON) reach every step as ``ctx.params``. ``listener`` is
        called with every event written; ``progress`` with what steps report
        through ``ctx.progress``. A Ctrl-C records the pipeline and the
        running step as cancelled and propagates.
        """
        return self._run(pipeline, params, attempt=1, tags={}, listener=listener, progress=progress)

    def _run(
        self,
        pipeline: Pipeline,
        params: Mapping[str, Any] | None,
        *,
        attempt: int,
        tags: dict[str, Any],
        listener: Listener | None = None,
        progress: ProgressCallback | None = None,
    ) -> PipelineRun:
        if not isinstance(pipeline, Pipeline):
            raise InvalidInputError(
                f"run() takes a Pipeline, got {type(pipeline).__name__}", field="pipeline"
            )
        order = pipeline.order()
        self._known[pipeline.name] = pipeline
        run = self.runs.start(
            "pipeline",
            pipeline.name,
            params=params,
            tags={
                **tags,
                "retry_crashed": pipeline.retry_crashed,
                "steps": [s.name for s in order],
            },
            project=self.project,
            attempt=attempt,
        )
        live = _Live(self, pipeline, run, listener or self.listener, progress)
        live.emit(PIPELINE_STARTED, attempt=attempt, params=run.params, tags=tags, steps=live.names)
        blocked: dict[str, str] = {}
        try:
            for step in order:
                reason = blocked.get(step.name)
                if reason is not None:
                    live.skip(step, reason)
                    continue
                if live.run_step(step):
                    continue
                why = f"upstream step {step.name!r} failed"
                for name in pipeline.downstream(step.name):
                    blocked.setdefault(name, why)
                if pipeline.fail_fast:
                    for other in order:
                        blocked.setdefault(
                            other.name, f"pipeline stopped (fail_fast): step {step.name!r} failed"
                        )
        except RunLostError as lost:
            log.warning(
                "pipeline %r run %s: a run of it was finished by someone else while it ran "
                "(%s); stopping",
                pipeline.name,
                run.id,
                lost.cause,
            )
            live.lost(lost)
            return self._result(run.id, live.values)
        except BaseException as exc:
            live.interrupted(exc)
            raise
        live.finish()
        return self._result(run.id, live.values)

    def _result(self, run_id: str, values: Mapping[str, Any]) -> PipelineRun:
        return pipeline_run_from(self.runs.get(run_id), self.runs.children(run_id), values)

    # -- crash recovery -------------------------------------------------------------

    def recover(self, pipelines: Iterable[Pipeline] = ()) -> list[Run]:
        """Find runs left "running" by a dead process; fail them, or re-run their pipeline.

        A pipeline or step run whose heartbeat (or start, if it never beat) is
        older than ``stale_after`` seconds is marked failed with an error
        saying its process stopped, and a ``pipeline.crashed`` /
        ``step.crashed`` event is written. A run that beats in between is
        left alone (the write checks the version it read). If the pipeline
        was defined with ``retry_crashed=True`` and its definition is known
        (given here, or run by this runner before), it is then run again with
        the same params, as the next ``attempt`` and tagged ``retry_of``
        (synchronously, at most ``max_crash_reruns`` times in a row).
        Returns the runs it marked failed.
        """
        from conveyor.pipelines.recovery import recover

        known = dict(self._known)
        for pipeline in pipelines:
            if not isinstance(pipeline, Pipeline):
                raise InvalidInputError(
                    f"recover() takes Pipelines, got {type(pipeline).__name__}", field="pipelines"
                )
            known[pipeline.name] = pipeline
        failed, reruns = recover(self, known)
        for pipeline, run in reruns:
            self._run(
                pipeline,
                run.params,
                attempt=run.attempt + 1,
                tags={"retry_of": run.id},
            )
        return failed

    def emit(
        self,
        kind: EventKind,
        pipeline: str,
        run_id: str | None,
        payload: Mapping[str, Any],
        listener: Listener | None = None,
    ) -> None:
        """Write an event of a catalogued kind about a pipeline (run), as durably as the kind
        says (the pipeline kinds are audit: committed before this returns), and tell the
        listener; a failing event log does not stop runs."""
        body = dict(payload) if run_id is None else {"run_id": run_id, **payload}
        try:
            self.events.record(kind, subject=pipeline, trace_id=run_id, payload=body)
        except ConveyorError as exc:
            # The log keeps an unwritten event and retries it; the run goes on.
            log.warning("could not write event %s of pipeline run %s: %s", kind.name, run_id, exc)
        tell = listener or self.listener
        if tell is not None:
            try:
                tell(kind.name, body)
            except Exception:  # a display must not change what the run does
                log.exception("the listener failed on event %s of run %s", kind.name, run_id)


class _Live:
    """The state of one pipeline run while it runs: values so far, heartbeats, events."""

    def __init__(
        self,
        runner: LocalRunner,
        pipeline: Pipeline,
        run: Run,
        listener: Listener | None,
        progress: ProgressCallback | None,
    ) -> None:
        self.runner = runner
        self.runs = runner.runs
        self.pipeline = pipeline
        self.run = run
        self.listener = listener
        self.progress = progress
        self.names = [s.name for s in pipeline.order()]
        self.values: dict[str, Any] = {}
        self.statuses: dict[str, str] = {}
        self.failures: list[tuple[str, int, str]] = []
        self.step_run_id: str | None = None
        self.current: str | None = None
        self.cancel: threading.Event | None = None
        self.clock = monotonic()
        self._last_beat = monotonic()

    # -- events and heartbeats --

    def emit(self, kind: EventKind, **payload: Any) -> None:
        body = {"pipeline": self.pipeline.name, **payload}
        self.runner.emit(kind, self.pipeline.name, self.run.id, body, self.listener)

    def beat(self, force: bool = False) -> None:
        """Stamp heartbeats if ``heartbeat_interval`` passed; RunLostError if we lost the run."""
        if not force and monotonic() - self._last_beat < self.runner.heartbeat_interval:
            return
        self._last_beat = monotonic()
        for run_id in (self.run.id, self.step_run_id):
            if run_id is None:
                continue
            try:
                self.runs.heartbeat(run_id)
            except ConcurrentUpdateError as exc:
                log.warning("heartbeat of run %s raced another write: %s", run_id, exc)
            except ConflictError as exc:
                raise RunLostError(exc) from exc
            except ConveyorError as exc:
                # A store hiccup must not fail the step; if it lasts past
                # stale_after, recovery takes the run and the next beat says so.
                log.warning("heartbeat of run %s failed: %s", run_id, exc)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (the retry backoff) in heartbeat-sized slices, beating between."""
        left = seconds
        while left > 0:
            chunk = min(left, self.runner.heartbeat_interval)
            self.runner._sleep(chunk)
            left -= chunk
            self.beat()

    # -- steps --

    def run_step(self, step: Step) -> bool:
        """Run ``step`` with its retries; True if it succeeded."""
        for attempt in range(1, step.max_attempts + 1):
            self.beat()
            attempt_run = self.runs.start(
                "step",
                step.name,
                tags={"pipeline": self.pipeline.name},
                project=self.runner.project,
                parent_id=self.run.id,
                attempt=attempt,
            )
            self.step_run_id, self.current = attempt_run.id, step.name
            common = {"step": step.name, "step_run_id": attempt_run.id, "attempt": attempt}
            self.emit(STEP_STARTED, **common, max_attempts=step.max_attempts)
            self.cancel = threading.Event()
            ctx = StepContext(
                pipeline=self.pipeline.name,
                pipeline_run_id=self.run.id,
                step=step.name,
                run_id=attempt_run.id,
                attempt=attempt,
                params=copy.deepcopy(self.run.params),  # a step cannot change the next one's
                store=self.runner.store,
                events=self.runner.events,
                artifacts=self.runner.artifacts,
                project=self.runner.owner,
                cancel=self.cancel,
                progress=self.progress,
            )
            inputs = {name: self.values[name] for name in step.inputs}
            started = monotonic()
            outcome = run_attempt(
                partial(_call, step, ctx, inputs),
                name=step.name,
                timeout=step.timeout,
                interval=self.runner.heartbeat_interval,
                beat=self.beat,
                cancel=self.cancel,
            )
            duration = round(monotonic() - started, 6)
            self.step_run_id = None
            if outcome.error is None:
                self._finish(attempt_run.id, "succeeded", None)
                self.values.update(outcome.outputs or {})
                self.statuses[step.name] = "succeeded"
                self.emit(STEP_SUCCEEDED, **common, duration_s=duration)
                return True
            error = outcome.error
            text = describe(error)
            self._finish(attempt_run.id, "failed", text + trace(error))
            if attempt < step.max_attempts and step.retryable(error):
                delay = step.delay(attempt - 1, self.runner._rng)
                self.emit(
                    STEP_RETRYING,
                    **common,
                    next_attempt=attempt + 1,
                    delay_s=delay,
                    duration_s=duration,
                    error=text,
                    timed_out=outcome.timed_out,
                )
                self.pause(delay)
                continue
            self.statuses[step.name] = "failed"
            self.failures.append((step.name, attempt, text))
            self.emit(
                STEP_FAILED,
                **common,
                attempts=attempt,
                duration_s=duration,
                error=text,
                error_type=type(error).__name__,
                timed_out=outcome.timed_out,
                retryable=step.retryable(error),
            )
            return False
        raise AssertionError("unreachable: the last attempt returns")  # pragma: no cover

    def skip(self, step: Step, reason: str) -> None:
        skipped = self.runs.start(
            "step",
            step.name,
            tags={"pipeline": self.pipeline.name, "skipped": True},
            project=self.runner.project,
            parent_id=self.run.id,
        )
        self._finish(skipped.id, "cancelled", f"skipped: {reason}")
        self.statuses[step.name] = "cancelled"
        self.emit(STEP_SKIPPED, step=step.name, step_run_id=skipped.id, reason=reason)

    def _finish(self, run_id: str, status: RunStatus, error: str | None) -> None:
        try:
            self.runs.finish(run_id, status, error=error)
        except ConflictError as exc:
            # Recovery declared us dead and finished the run first: it is no longer ours.
            raise RunLostError(exc) from exc

    # -- the end --

    def finish(self) -> None:
        if self.failures:
            name, attempts, text = self.failures[0]
            tries = "attempt" if attempts == 1 else "attempts"
            error: str | None = f"step {name!r} failed after {attempts} {tries}: {text}"
            if len(self.failures) > 1:
                others = ", ".join(repr(f[0]) for f in self.failures[1:])
                error = f"{error}; also failed: {others}"
            status: RunStatus = "failed"
        else:
            error, status = None, "succeeded"
        self._end(status, error)

    def interrupted(self, exc: BaseException) -> None:
        """The runner stopped: Ctrl-C (cancelled) or its own error (failed), recorded quietly.

        The caller re-raises ``exc``; nothing here may hide it.
        """
        if self.cancel is not None:
            self.cancel.set()
        status: RunStatus
        if isinstance(exc, Exception):
            status, reason = "failed", f"the runner failed: {describe(exc)}"
        else:
            status, reason = "cancelled", f"interrupted ({describe(exc)})"
        try:
            if self.step_run_id is not None:
                self.runs.finish(self.step_run_id, status, error=reason)
                kind = STEP_CANCELLED if status == "cancelled" else STEP_FAILED
                self.emit(kind, step=self.current, step_run_id=self.step_run_id, error=reason)
            self._end(status, reason)
        except ConveyorError as err:
            log.warning("could not record the interruption of run %s: %s", self.run.id, err)

    def lost(self, lost: RunLostError) -> None:
        """Someone else (recovery) finished one of our runs: stop, and end the pipeline run.

        Usually recovery took the pipeline run itself and there is nothing
        left to record; if it only took a step run, the pipeline run fails.
        """
        if self.cancel is not None:
            self.cancel.set()
        # Raises RunLostError in the usual case: the pipeline run is not ours to end.
        with contextlib.suppress(RunLostError, ConveyorError):
            self._end("failed", f"a step run was finished by someone else: {lost.cause}")

    def _end(self, status: RunStatus, error: str | None) -> None:
        self._finish(self.run.id, status, error)
        self.emit(
            PIPELINE_FINISHED,
            status=status,
            duration_s=round(monotonic() - self.clock, 6),
            error=error,
            steps=self.statuses,
            attempt=self.run.attempt,
        )


def _call(step: Step, ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    return step.outputs_from(step.func(ctx, **inputs))


if TYPE_CHECKING:
    from conveyor.pipelines.runners import Runner

    # mypy holds LocalRunner to the protocol the scheduler and the CLI are typed against.
    _LOCAL_IS_A_RUNNER: type[Runner] = LocalRunner
