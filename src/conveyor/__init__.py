"""Conveyor: from a working prototype to production.

::

    import conveyor

    with conveyor.Project.open() as project:
        candidate = conveyor.train_candidate(project, "fraud-detector", actor="ana")
        report = conveyor.evaluate_version(project, candidate.version.ref)

``import conveyor`` is cheap: it loads the error classes and nothing else.
Every other public name is imported on first access (PEP 562), so a script
that only needs the event log never pays for the CLI, the ORM of another
seam, or an ML library. ``__all__`` lists every public name.
"""

import typing as _typing

from conveyor._lazy import lazy_exports as _lazy_exports
from conveyor._version import __version__
from conveyor.errors import (
    AccessError,
    AlreadyExistsError,
    ArtifactIntegrityError,
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    BudgetExceededError,
    ClosedError,
    ConcurrentUpdateError,
    ConfigError,
    ConflictError,
    ConveyorError,
    GateFailedError,
    IntegrityError,
    InvalidInputError,
    MissingDependencyError,
    ModelUnavailableError,
    NotFittedError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProjectNotFoundError,
    RateLimitedError,
    RequestTimeoutError,
    ThrottledError,
    UnknownBackendError,
    VersionRefusedError,
)

if _typing.TYPE_CHECKING:
    from conveyor import rag
    from conveyor.backends import BackendURL, Seam
    from conveyor.checks import CheckResult, Report, run_gates
    from conveyor.config import ProjectSpec, load_spec
    from conveyor.data.drift import DriftDetector
    from conveyor.pipelines import LocalRunner, Pipeline
    from conveyor.pipelines.errors import (
        PipelineDefinitionError,
        PipelineFailedError,
        StepCancelledError,
        StepOutputError,
        StepTimeoutError,
    )
    from conveyor.project import Project, init_project
    from conveyor.registry import Registry
    from conveyor.training.flow import evaluate_version, train_candidate
    from conveyor.training.optimize.versions import optimize_version
    from conveyor.training.runs import run

# name -> module that defines it
_LAZY = {
    "BackendURL": "conveyor.backends",
    "Seam": "conveyor.backends",
    "CheckResult": "conveyor.checks",
    "Report": "conveyor.checks",
    "run_gates": "conveyor.checks",
    "ProjectSpec": "conveyor.config",
    "load_spec": "conveyor.config",
    "DriftDetector": "conveyor.data.drift",
    "LocalRunner": "conveyor.pipelines",
    "Pipeline": "conveyor.pipelines",
    "PipelineDefinitionError": "conveyor.pipelines.errors",
    "PipelineFailedError": "conveyor.pipelines.errors",
    "StepCancelledError": "conveyor.pipelines.errors",
    "StepOutputError": "conveyor.pipelines.errors",
    "StepTimeoutError": "conveyor.pipelines.errors",
    "Project": "conveyor.project",
    "init_project": "conveyor.project",
    "Registry": "conveyor.registry",
    "evaluate_version": "conveyor.training.flow",
    "train_candidate": "conveyor.training.flow",
    "optimize_version": "conveyor.training.optimize.versions",
    "run": "conveyor.training.runs",
    "rag": "conveyor.rag",  # the package: conveyor.rag.search(...), .context, .build
}

__all__ = [
    "AccessError",
    "AlreadyExistsError",
    "ArtifactIntegrityError",
    "AuthenticationError",
    "BackendError",
    "BackendURL",
    "BackendUnavailableError",
    "BudgetExceededError",
    "CheckResult",
    "ClosedError",
    "ConcurrentUpdateError",
    "ConfigError",
    "ConflictError",
    "ConveyorError",
    "DriftDetector",
    "GateFailedError",
    "IntegrityError",
    "InvalidInputError",
    "LocalRunner",
    "MissingDependencyError",
    "ModelUnavailableError",
    "NotFittedError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineFailedError",
    "Project",
    "ProjectNotFoundError",
    "ProjectSpec",
    "RateLimitedError",
    "Registry",
    "Report",
    "RequestTimeoutError",
    "Seam",
    "StepCancelledError",
    "StepOutputError",
    "StepTimeoutError",
    "ThrottledError",
    "UnknownBackendError",
    "VersionRefusedError",
    "__version__",
    "evaluate_version",
    "init_project",
    "load_spec",
    "optimize_version",
    "rag",
    "run",
    "run_gates",
    "train_candidate",
]


__getattr__, __dir__ = _lazy_exports(__name__, _LAZY, __all__)
