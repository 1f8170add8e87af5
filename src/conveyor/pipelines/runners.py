"""What runs a pipeline: the :class:`Runner` protocol, and the table of runners by name.

::

    from conveyor.pipelines.runners import runner_for

    runner = runner_for("local", project)            # LocalRunner.for_project(project)
    result = runner.run(nightly, {"day": "2026-11-26"})
    Scheduler(runner, [nightly]).serve(stop)          # any Runner will do

:class:`~conveyor.pipelines.runner.LocalRunner` runs the steps in this
process; a distributed runner (Ray) runs them elsewhere but records the same
runs and events in the same store, so the scheduler, recovery on restart, the
run history and the CLI work with either. A runner is named in
:data:`RUNNERS`, a table of lazy import strings with the extra that installs
its driver, as the seams' backends are; ``RUNNERS.register`` adds one (a Ray
runner will be ``BackendSpec("conveyor.pipelines.ray_runner:RayRunner",
"ray", ("ray",))``, and asking for it without Ray installed says
``pip install 'conveyor[ray]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from conveyor._names import NameTable
from conveyor.backends import BackendSpec
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.capability import EventKind
    from conveyor.events.log import EventLog
    from conveyor.pipelines.context import ProgressCallback
    from conveyor.pipelines.definition import Pipeline
    from conveyor.pipelines.results import PipelineRun
    from conveyor.project import Project
    from conveyor.store.database import MetadataStore
    from conveyor.store.runs import Run

__all__ = ["RUNNERS", "Listener", "Runner", "runner_for"]

#: Called with (event kind, payload) for every transition; the CLI draws progress from it.
Listener = Callable[[str, Mapping[str, Any]], None]


@runtime_checkable
class Runner(Protocol):
    """Runs pipelines and records them: runs in ``store``, durable events in ``events``.

    The scheduler reads its schedules from ``store``, polls triggers against
    ``events``, writes its own events (catalogued kinds) through :meth:`emit`
    (so a runner's listener hears them too), starts runs with :meth:`run`
    and, each loop, lets :meth:`recover` deal with runs a dead process left
    behind.
    """

    store: MetadataStore
    events: EventLog

    @classmethod
    def for_project(cls, project: Project, **options: Any) -> Runner:
        """A runner over a project's backends; its steps get ``ctx.project``."""
        ...

    def run(
        self,
        pipeline: Pipeline,
        params: Mapping[str, Any] | None = None,
        *,
        listener: Listener | None = None,
        progress: ProgressCallback | None = None,
    ) -> PipelineRun:
        """Run every step of ``pipeline`` once (plus retries) with ``params``; the recorded run."""
        ...

    def recover(self, pipelines: Iterable[Pipeline] = ()) -> list[Run]:
        """Fail (or re-run) the runs a dead process left "running"; the runs it failed."""
        ...

    def emit(
        self,
        kind: EventKind,
        pipeline: str,
        run_id: str | None,
        payload: Mapping[str, Any],
        listener: Listener | None = None,
    ) -> None:
        """Write an event of a catalogued kind about a pipeline (run), as durably as the kind
        says, and tell the listener (with the kind's name)."""
        ...


def _check(name: str, spec: BackendSpec) -> None:
    if not isinstance(spec, BackendSpec) or ":" not in spec.target:
        raise InvalidInputError(
            f"runner {name!r}: register a BackendSpec('package.module:Class', extra, requires), "
            f"got {spec!r}",
            field="runner",
        )


#: Runner name -> where its class lives and what it needs installed.
RUNNERS: NameTable[BackendSpec] = NameTable(
    "pipeline runner",
    {"local": BackendSpec("conveyor.pipelines.runner:LocalRunner")},
    field="runner",
    check=_check,
)


def runner_for(name: str, project: Project, **options: Any) -> Runner:
    """The runner called ``name``, built for ``project`` with ``options`` (``cls.for_project``).

    InvalidInputError for an unknown name (listing the known ones),
    MissingDependencyError when the runner's driver is not installed.
    """
    spec = RUNNERS.require(name)
    cls = spec.load(f"the {name!r} pipeline runner", runner=name)
    build = getattr(cls, "for_project", None)
    if not callable(build):
        raise InvalidInputError(
            f"the {name!r} pipeline runner ({spec.target}) has no for_project(project, **options)",
            field="runner",
        )
    runner = build(project, **options)
    if not isinstance(runner, Runner):
        raise InvalidInputError(
            f"the {name!r} pipeline runner ({spec.target}) built a {type(runner).__name__}, "
            "which is not a Runner (run, recover, emit, store, events)",
            field="runner",
        )
    return runner
