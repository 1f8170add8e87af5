"""Conveyor: from a working prototype to production.

``import conveyor`` is cheap: it loads the error classes and nothing else.
Every other public name is imported on first access (PEP 562), so a script
that only needs the event log never pays for the CLI, the ORM of another
seam, or an ML library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor._lazy import lazy_exports
from conveyor._version import __version__
from conveyor.errors import (
    AlreadyExistsError,
    ArtifactIntegrityError,
    BackendError,
    BackendUnavailableError,
    ClosedError,
    ConcurrentUpdateError,
    ConfigError,
    ConflictError,
    ConveyorError,
    GateFailedError,
    IntegrityError,
    InvalidInputError,
    MissingDependencyError,
    NotFittedError,
    NotFoundError,
    ProjectNotFoundError,
    UnknownBackendError,
)

if TYPE_CHECKING:
    from conveyor.backends import BackendURL, Seam
    from conveyor.checks import CheckResult, Report, run_gates
    from conveyor.config import ProjectSpec, load_spec
    from conveyor.project import Project, init_project
    from conveyor.registry import Registry
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
    "Project": "conveyor.project",
    "Registry": "conveyor.registry",
    "init_project": "conveyor.project",
    "run": "conveyor.training.runs",
}

__all__ = [
    "AlreadyExistsError",
    "ArtifactIntegrityError",
    "BackendError",
    "BackendURL",
    "BackendUnavailableError",
    "CheckResult",
    "ClosedError",
    "ConcurrentUpdateError",
    "ConfigError",
    "ConflictError",
    "ConveyorError",
    "GateFailedError",
    "IntegrityError",
    "InvalidInputError",
    "MissingDependencyError",
    "NotFittedError",
    "NotFoundError",
    "Project",
    "ProjectNotFoundError",
    "ProjectSpec",
    "Registry",
    "Report",
    "Seam",
    "UnknownBackendError",
    "__version__",
    "init_project",
    "load_spec",
    "run",
    "run_gates",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
