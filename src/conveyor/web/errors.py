"""Errors as HTTP answers: a status found by walking the exception's classes, a JSON body.

Every server Conveyor runs answers an error the same way: the error's
``to_dict()`` (a stable ``code``, a message, its context) as JSON, with the
status of the nearest class in :data:`STATUS`, ``Retry-After`` when the
caller is throttled and ``WWW-Authenticate`` when a key is missing. This is
the only place that maps errors to statuses; ``conveyor.errors`` knows
nothing of HTTP.
"""

from __future__ import annotations

from typing import Any

import orjson

from conveyor import errors as e

__all__ = ["STATUS", "BadRequest", "error_body", "status_of"]

#: Error class -> HTTP status; an error gets the status of the first of its classes listed.
STATUS: dict[type[e.ConveyorError], int] = {
    e.PayloadTooLargeError: 413,
    e.RequestTimeoutError: 408,
    e.InvalidInputError: 422,
    e.NotFittedError: 422,
    e.ConfigError: 422,
    e.NotFoundError: 404,
    e.AuthenticationError: 401,
    e.AccessError: 403,
    e.RateLimitedError: 429,
    e.ThrottledError: 503,
    e.ModelUnavailableError: 503,
    e.BackendUnavailableError: 503,
    e.ClosedError: 503,
    e.ConflictError: 409,
    e.GateFailedError: 409,
    e.IntegrityError: 500,
    e.BackendError: 503,
    e.ConveyorError: 400,
}


class BadRequest(Exception):
    """A body that could not be decoded at all: 400, not 422 (the request is not even a
    well-formed instance of the API's format)."""

    def __init__(self, error: e.InvalidInputError) -> None:
        super().__init__(error.message)
        self.error = error


def status_of(exc: e.ConveyorError) -> int:
    """The HTTP status of ``exc``: that of the nearest of its classes in :data:`STATUS`."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 400


def error_body(
    exc: e.ConveyorError, request_id: str | None
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The JSON body and the extra headers of ``exc``'s answer."""
    body: dict[str, Any] = exc.to_dict()
    if isinstance(exc, e.IntegrityError):
        # Where the damaged bytes lie is the operator's business (the server logs it), not
        # the client's: no answer names a path of the server.
        body.pop("location", None)
        body["message"] = (
            f"stored data failed its integrity check (expected {body.get('expected', '?')}); "
            "see the server's log"
        )
    elif isinstance(exc, e.BackendUnavailableError):
        # Which host and port a backend lives on is the operator's business too (the log
        # has it): a client learns which kind of service is down, and to retry.
        for private in ("url", "host", "port"):
            body.pop(private, None)
        body["message"] = (
            f"the {body.get('seam', 'backing')} service is unavailable; retry later "
            "(the server's log has the details)"
        )
    if request_id is not None:
        body.setdefault("request_id", request_id)
    headers: list[tuple[bytes, bytes]] = []
    retry = getattr(exc, "retry_after", None) or exc.context.get("retry_after")
    if isinstance(exc, e.ThrottledError) or isinstance(retry, int | float):
        # A throttled caller, or a service down for a known while (a breaker's next trial).
        retry = retry if isinstance(retry, int | float) else 1.0
        headers.append((b"retry-after", str(max(1, round(retry))).encode()))
    if isinstance(exc, e.AuthenticationError):
        headers.append((b"www-authenticate", b'Bearer realm="conveyor"'))
    return orjson.dumps(body, default=str), headers
