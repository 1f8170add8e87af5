"""Training runs: what one training job used, set and produced.

::

    import conveyor

    with conveyor.run("fraud", params={"max_depth": 6}, seed=7) as run:
        train = run.use_dataset("transactions@3")      # lineage: this run read that version
        model = fit(train, max_depth=6)                # plain user code
        run.log_metrics({"auc": 0.91})
        run.log_artifact("model.pkl", pickle.dumps(model))

A run is a row of the ``runs`` table (kind ``train``). Entering the block
starts it and records the seed (applied to ``random`` and numpy), the git
commit and dirty flag, and the environment (Python, platform, versions of
the ML libraries that are installed); leaving it finishes the run as
``succeeded``, or ``failed`` with the exception text (the exception
propagates). Events ``run.started``, ``run.metric`` and ``run.finished``
go to the project's event log.

``project`` is an open :class:`~conveyor.project.Project`, a path inside a
project, or None for the project found upwards from the current directory;
a project the run opened itself is closed when the run ends.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from conveyor.errors import ClosedError, ConflictError, InvalidInputError
from conveyor.events.catalogue import RUN_FINISHED, RUN_METRIC, RUN_STARTED
from conveyor.training.provenance import apply_seed, environment, git_state

if TYPE_CHECKING:
    from conveyor.artifacts.digest import ArtifactRef
    from conveyor.checks.gates import Gate
    from conveyor.checks.result import Report
    from conveyor.data.versions import DatasetVersion
    from conveyor.project import Project
    from conveyor.store.runs import Run, RunStatus
    from conveyor.training.gates.context import GateContext

__all__ = [
    "RESERVED_TAGS",
    "TrainingRun",
    "apply_seed",
    "environment",
    "git_state",
    "run",
]

#: Tags the run writes itself; a user tag of the same name is refused.
RESERVED_TAGS = ("seed", "git", "environment", "datasets")


def run(
    name: str,
    *,
    kind: str = "train",
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    project: Project | str | os.PathLike[str] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> TrainingRun:
    """A training run to use as ``with conveyor.run(name) as run:``.

    ``project`` is an open :class:`~conveyor.project.Project`, a path inside a
    project, or None for the project at or above the current directory.
    ``seed`` None draws one, which is recorded, so every run can be repeated.
    """
    return TrainingRun(name, kind=kind, params=params, seed=seed, project=project, tags=tags)


class TrainingRun:
    """One training run; use it as a context manager (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        kind: str = "train",
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        project: Project | str | os.PathLike[str] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InvalidInputError(f"seed must be an integer >= 0, got {seed!r}", field="seed")
        if tags is not None and not isinstance(tags, Mapping):
            raise InvalidInputError(
                f"tags must be a mapping, got {type(tags).__name__}", field="tags"
            )
        clash = sorted(set(tags or {}) & set(RESERVED_TAGS))
        if clash:
            raise InvalidInputError(
                f"tag(s) {', '.join(clash)} are recorded by the run itself; "
                f"reserved tags: {', '.join(RESERVED_TAGS)}",
                field=f"tags.{clash[0]}",
            )
        self.name = name
        self.kind = kind
        self.seed = seed if seed is not None else secrets.randbits(32)
        self._params = dict(params or {})
        self._tags = dict(tags or {})
        self._project_arg = project
        self._backends: Project | None = None
        self._owned: Project | None = None
        self._run: Run | None = None
        self._datasets: list[str] = []

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> TrainingRun:
        if self._run is not None:
            raise ConflictError(f"training run {self.name!r} was already started; start a new one")
        backends, root, project_name = self._resolve_backends()
        try:
            seeded = apply_seed(self.seed)
            tags: dict[str, Any] = {
                **self._tags,
                "seed": {"value": self.seed, "applied_to": seeded},
                "environment": environment(),
            }
            git = git_state(root)
            if git is not None:
                tags["git"] = git
            self._run = backends.store.runs.start(
                self.kind, self.name, params=self._params, tags=tags, project=project_name
            )
        except BaseException:
            self._close_owned()
            raise
        self._backends = backends
        backends.events.record(
            RUN_STARTED,
            subject=self.name,
            payload={"run": self._run.id, "kind": self.kind, "seed": self.seed, "git": git},
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._finish(exc)
        except Exception as err:
            if exc is None:
                raise
            # The block's own exception is what the user must see; ours goes with it.
            exc.add_note(f"conveyor could not record the end of run {self.name!r}: {err!r}")

    def _finish(self, exc: BaseException | None) -> None:
        backends, current = self._require()
        try:
            status: RunStatus
            error: str | None
            if exc is None:
                status, error = "succeeded", None
            elif isinstance(exc, Exception):
                status, error = "failed", f"{type(exc).__name__}: {exc}"
            else:  # KeyboardInterrupt, SystemExit: stopped, not broken
                status, error = "cancelled", f"{type(exc).__name__}: {exc}".rstrip(": ")
            finished = backends.store.runs.finish(current.id, status, error=error)
            self._run = finished
            backends.events.record(
                RUN_FINISHED,
                subject=self.name,
                payload={
                    "run": finished.id,
                    "status": status,
                    "error": error,
                    "metrics": finished.metrics,
                    "seconds": _seconds(finished),
                },
            )
        finally:
            self._backends = None
            self._close_owned()

    def _resolve_backends(self) -> tuple[Project, Path | None, str | None]:
        from conveyor.project import Project

        arg = self._project_arg
        if arg is None or isinstance(arg, str | os.PathLike):
            owned = Project.open(arg)
            self._owned = owned
            return owned, owned.root, owned.name
        if not isinstance(arg, Project):
            raise InvalidInputError(
                f"project must be a Project, a path or None; got {type(arg).__name__}",
                field="project",
            )
        return arg, arg.root, arg.name

    def _close_owned(self) -> None:
        owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()

    def _require(self) -> tuple[Project, Run]:
        if self._backends is None or self._run is None:
            state = "has finished" if self._run is not None else "has not started"
            raise ClosedError(
                f"training run {self.name!r} {state}: log inside `with conveyor.run(...) as run:`"
            )
        return self._backends, self._run

    # -- what the run holds ---------------------------------------------------

    @property
    def id(self) -> str:
        """The run's id in the ``runs`` table (once started)."""
        if self._run is None:
            raise ClosedError(f"training run {self.name!r} has not started")
        return self._run.id

    @property
    def record(self) -> Run:
        """The run as last written (status, params, metrics, tags, artifacts)."""
        if self._run is None:
            raise ClosedError(f"training run {self.name!r} has not started")
        return self._run

    @property
    def datasets(self) -> tuple[str, ...]:
        """Refs (``name@number``) of the dataset versions this run used."""
        return tuple(self._datasets)

    # -- logging --------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the run's parameters."""
        backends, current = self._require()
        self._run = backends.store.runs.log_params(current.id, params)

    def log_param(self, name: str, value: Any) -> None:
        self.log_params({name: value})

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """Record metrics: the latest value on the run, each value as a ``run.metric`` event."""
        backends, current = self._require()
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise InvalidInputError(f"step must be an integer >= 0, got {step!r}", field="step")
        self._run = backends.store.runs.log_metrics(current.id, metrics)
        backends.events.record(
            RUN_METRIC,
            subject=self.name,
            payload={
                "run": current.id,
                "step": step,
                "metrics": {k: self._run.metrics[k] for k in metrics},
            },
        )

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        self.log_metrics({name: value}, step=step)

    def log_artifact(
        self, name: str, data: bytes | os.PathLike[str] | str, *, media_type: str | None = None
    ) -> ArtifactRef:
        """Store ``data`` (bytes, or a path to a file) and record it on the run as ``name``."""
        backends, current = self._require()
        if not isinstance(name, str) or not name:
            raise InvalidInputError(
                f"an artifact name is a non-empty string, got {name!r}", field="name"
            )
        payload: bytes | os.PathLike[str]
        if isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
        elif isinstance(data, str | os.PathLike):
            path = Path(data)
            if not path.is_file():
                raise InvalidInputError(
                    f"artifact {name!r}: {str(path)!r} is not a file", field="data", path=str(path)
                )
            payload = path
        else:
            raise InvalidInputError(
                f"artifact {name!r}: data must be bytes or a path, got {type(data).__name__}",
                field="data",
            )
        ref = backends.artifacts.put(payload, media_type=media_type)
        self._run = backends.store.runs.add_artifact(current.id, name, ref.digest, ref.size)
        return ref

    def use_dataset(self, version_or_ref: DatasetVersion | str) -> DatasetVersion:
        """Record that this run reads a dataset version (``name@3``, ``name``, an id, or a version).

        Writes the lineage link (role ``input``) and adds the ref to the run's
        ``datasets`` tag; returns the version. NotFoundError if it does not exist.
        """
        from conveyor.data.lineage import record_lineage
        from conveyor.data.versions import DatasetRepository, DatasetVersion

        backends, current = self._require()
        if isinstance(version_or_ref, DatasetVersion):
            version = DatasetRepository(backends.store, backends.artifacts).by_id(version_or_ref.id)
        elif isinstance(version_or_ref, str) and version_or_ref:
            version = DatasetRepository(backends.store, backends.artifacts).resolve(version_or_ref)
        else:
            raise InvalidInputError(
                "use_dataset takes a DatasetVersion or a ref (name, name@N, name@latest, id), "
                f"got {version_or_ref!r}",
                field="version_or_ref",
            )
        record_lineage(
            backends.store, current.id, version.id, "input", who=f"training run {self.name!r}"
        )
        if version.ref not in self._datasets:
            self._datasets.append(version.ref)
            # The run is ours alone while the block runs: a version clash means a bug, not a race.
            self._run = backends.store.runs.update(
                current.id,
                expected_version=current.version,
                tags={**current.tags, "datasets": list(self._datasets)},
            )
        return version

    def validate(
        self,
        gates: Iterable[Gate],
        context: GateContext,
        *,
        subject: str | None = None,
        subject_version: str | None = None,
    ) -> Report:
        """Run validation gates on this run's model; the report is saved and linked to the run.

        ``subject`` defaults to ``model:<run name>``. The report's verdict is
        also logged as the metric ``gates_passed`` (1 or 0).
        """
        from conveyor.training.gates.validate import validate_candidate

        backends, current = self._require()
        report = validate_candidate(
            subject or f"model:{self.name}",
            gates,
            context,
            store=backends.store,
            events=backends.events,
            run_id=current.id,
            subject_version=subject_version,
        )
        self._run = backends.store.runs.log_metrics(
            current.id, {"gates_passed": float(report.passed)}
        )
        return report

    def __repr__(self) -> str:
        state = self._run.status if self._run is not None else "not started"
        return f"TrainingRun({self.name!r}, kind={self.kind!r}, seed={self.seed}, {state})"


def _seconds(finished: Run) -> float | None:
    if finished.ended_at is None:
        return None
    return (finished.ended_at - finished.started_at).total_seconds()
