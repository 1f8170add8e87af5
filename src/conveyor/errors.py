"""Every error Conveyor raises, in one hierarchy.

This module imports the standard library only, so any layer (and any user
``except`` clause) can use it without pulling in a capability.

Each class mixes in the built-in exception that fits, so code that already
catches ``LookupError`` or ``ValueError`` keeps working, and carries a stable
``code`` string. The HTTP layer maps codes to statuses; nothing here knows
about HTTP.

::

    ConveyorError                                   code "conveyor_error"
    ├── ConfigError (ValueError)                    code "config_invalid"
    │   └── ProjectNotFoundError (FileNotFoundError)  code "project_not_found"
    ├── BackendError                                code "backend_error"
    │   ├── UnknownBackendError (ValueError)           code "backend_unknown"
    │   ├── MissingDependencyError (ImportError)       code "backend_missing_dependency"
    │   └── BackendUnavailableError (ConnectionError)  code "backend_unavailable"
    ├── NotFoundError (LookupError)                 code "not_found"
    ├── ConflictError                               code "conflict"
    │   ├── AlreadyExistsError                         code "already_exists"
    │   ├── ConcurrentUpdateError                      code "concurrent_update"
    │   └── VersionRefusedError                        code "version_refused"
    ├── IntegrityError                              code "integrity"
    │   └── ArtifactIntegrityError                     code "artifact_tampered"
    ├── InvalidInputError (ValueError)              code "invalid_input"
    │   ├── PayloadTooLargeError                       code "payload_too_large"
    │   └── RequestTimeoutError                        code "request_timeout"
    ├── NotFittedError (ValueError, AttributeError) code "not_fitted"
    ├── GateFailedError                             code "gate_failed"
    ├── AccessError (PermissionError)               code "access_denied"
    │   ├── AuthenticationError                        code "unauthenticated"
    │   └── PermissionDeniedError                      code "forbidden"
    ├── ModelUnavailableError                       code "model_unavailable"
    ├── ThrottledError                              code "throttled"
    │   ├── RateLimitedError                           code "rate_limited"
    │   │   └── BudgetExceededError                    code "budget_exceeded"
    │   └── OverloadedError                            code "overloaded"
    └── ClosedError (RuntimeError)                  code "closed"
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AccessError",
    "AlreadyExistsError",
    "ArtifactIntegrityError",
    "AuthenticationError",
    "BackendError",
    "BackendUnavailableError",
    "BudgetExceededError",
    "ClosedError",
    "ConcurrentUpdateError",
    "ConfigError",
    "ConflictError",
    "ConveyorError",
    "GateFailedError",
    "IntegrityError",
    "InvalidInputError",
    "MissingDependencyError",
    "ModelUnavailableError",
    "NotFittedError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProjectNotFoundError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ThrottledError",
    "UnknownBackendError",
    "VersionRefusedError",
]


class ConveyorError(Exception):
    """Base class: a message a user can act on, plus a stable ``code``."""

    code: ClassVar[str] = "conveyor_error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        #: Machine-readable facts about the failure (field, host, digest...).
        self.context: dict[str, Any] = context

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The JSON body an API answers with: stable code, message, context."""
        return {"code": self.code, "message": self.message, **self.context}


class ConfigError(ConveyorError, ValueError):
    """The project spec is malformed: names the file, the field and what was expected."""

    code = "config_invalid"


class ProjectNotFoundError(ConfigError, FileNotFoundError):
    """No ``.conveyor/`` folder in the current directory or any parent."""

    code = "project_not_found"


class BackendError(ConveyorError):
    """Something about a backend behind one of the seams."""

    code = "backend_error"


class UnknownBackendError(BackendError, ValueError):
    """A URL scheme no backend is registered for; the message lists the known ones."""

    code = "backend_unknown"


class MissingDependencyError(BackendError, ImportError):
    """The backend exists but its optional dependency is not installed."""

    code = "backend_missing_dependency"


class BackendUnavailableError(BackendError, ConnectionError):
    """The backend's service cannot be reached; names host and port."""

    code = "backend_unavailable"


class NotFoundError(ConveyorError, LookupError):
    """The thing asked for does not exist."""

    code = "not_found"


class ConflictError(ConveyorError):
    """The write conflicts with the current state."""

    code = "conflict"


class AlreadyExistsError(ConflictError):
    """A create would overwrite something that already exists."""

    code = "already_exists"


class ConcurrentUpdateError(ConflictError):
    """Someone else changed the row since it was read (optimistic concurrency).

    Re-read, re-apply the change, and write again.
    """

    code = "concurrent_update"


class IntegrityError(ConveyorError):
    """Stored data does not match what was recorded for it."""

    code = "integrity"


class ArtifactIntegrityError(IntegrityError):
    """An artifact's bytes no longer hash to its address: it was altered or damaged."""

    code = "artifact_tampered"


class InvalidInputError(ConveyorError, ValueError):
    """An argument or record is not acceptable; names the field."""

    code = "invalid_input"


class RequestTimeoutError(InvalidInputError):
    """The client sent its request too slowly (a trickled body; HTTP 408)."""

    code = "request_timeout"


class NotFittedError(ConveyorError, ValueError, AttributeError):
    """An estimator (drift detector, validator, scorer) was used before ``fit()``.

    Subclasses ``AttributeError`` too, as scikit-learn's does, so ``hasattr``
    and existing ``except`` clauses keep working.
    """

    code = "not_fitted"


class PayloadTooLargeError(InvalidInputError):
    """A request body or batch exceeds the configured limit (HTTP 413)."""

    code = "payload_too_large"


class GateFailedError(ConveyorError):
    """A gate's report did not pass; ``report`` holds the failed checks."""

    code = "gate_failed"

    def __init__(self, message: str, report: Any = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.report = report


class AccessError(ConveyorError, PermissionError):
    """The caller may not do this: no valid credentials, or not allowed."""

    code = "access_denied"


class AuthenticationError(AccessError):
    """No API key, or one that is unknown, revoked or expired (HTTP 401)."""

    code = "unauthenticated"


class PermissionDeniedError(AccessError):
    """The key is valid but its role does not allow the action (HTTP 403)."""

    code = "forbidden"


class ModelUnavailableError(ConveyorError):
    """A model version exists but cannot serve here: it failed to load or to warm up, or
    its artifact failed its integrity check (HTTP 503, code ``model_unavailable``)."""

    code = "model_unavailable"


class VersionRefusedError(ConflictError):
    """A route change was refused because a version it adds cannot serve: its artifact
    failed its integrity check or its warm-up prediction failed (HTTP 409, code
    ``version_refused``; ``reason`` says which). Nothing was committed."""

    code = "version_refused"


class ThrottledError(ConveyorError):
    """Try again later; ``retry_after`` (seconds) says when."""

    code = "throttled"

    def __init__(self, message: str, *, retry_after: float = 1.0, **context: Any) -> None:
        super().__init__(message, retry_after=retry_after, **context)
        self.retry_after = retry_after


class RateLimitedError(ThrottledError):
    """The caller's key spent its request budget (HTTP 429)."""

    code = "rate_limited"


class BudgetExceededError(RateLimitedError):
    """A spending budget would be passed by this call (HTTP 429): the context names the
    budget, its scope and subject, its limit, what is spent and reserved, and when it
    resets (``retry_after`` is the wait until then)."""

    code = "budget_exceeded"


class OverloadedError(ThrottledError):
    """A queue is full: back-pressure instead of unbounded growth (HTTP 503)."""

    code = "overloaded"


class ClosedError(ConveyorError, RuntimeError):
    """The object was used after ``close()``."""

    code = "closed"


def error_from_body(body: Any, status: int) -> ConveyorError:
    """The typed error an API's JSON error body names by its stable ``code`` (the class
    of that code, :class:`ConveyorError` for a code this version does not know)."""
    if not isinstance(body, dict):
        return ConveyorError(f"the server answered {status} without a Conveyor error body")
    code = body.get("code")
    context = {k: v for k, v in body.items() if k not in ("code", "message")}
    message = str(body.get("message") or f"the server answered {status}")
    found = _by_code(ConveyorError).get(str(code))
    if found is None:
        error = ConveyorError(message, code=code, **context)
    else:
        error = found.__new__(found)
        ConveyorError.__init__(error, message, **context)
    return error


def _by_code(root: type[ConveyorError]) -> dict[str, type[ConveyorError]]:
    found = {root.code: root}
    for sub in root.__subclasses__():
        for code, cls in _by_code(sub).items():
            found.setdefault(code, cls)
    return found
