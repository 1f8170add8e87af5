"""The CLI's calls to a running server (``--url``), with the standard library's HTTP client.

A command that only asks a server, such as ``conveyor rollback MODEL --url URL`` in an
incident, then starts without the store, the spec or an HTTP library: the server already
holds all three, commits the change and switches its own worker at once. The key is the
CLI's (``CONVEYOR_API_KEY``); an error answer becomes the typed error its stable code
names, printed as one line like any other.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from conveyor.errors import BackendUnavailableError, InvalidInputError, error_from_body

#: The key the CLI acts with (the same variable as for a local project).
API_KEY_ENV = "CONVEYOR_API_KEY"


def segment(value: str) -> str:
    """``value`` as one path segment (a model name with a slash stays one segment)."""
    return quote(value, safe="")


def call(
    url: str,
    method: str,
    path: str,
    *,
    query: dict[str, str | None] | None = None,
    document: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Any:
    """``method path`` on the server at ``url``; its JSON answer, or its error raised.

    A server that cannot be reached (refused, no such host) is a BackendUnavailableError
    "cannot reach URL: reason"; one that takes the request and does not answer within
    ``timeout`` seconds, "did not answer"."""
    import http.client

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"--url must be http(s)://HOST[:PORT], got {url!r}", field="url")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    target = parts.path.rstrip("/") + path
    query = {k: v for k, v in (query or {}).items() if v is not None}
    if query:
        target += "?" + urlencode(query)
    headers = {**(headers or {}), "accept": "application/json"}
    token = os.environ.get(API_KEY_ENV)
    if token:
        headers["authorization"] = f"Bearer {token}"
    body = None
    if document is not None:
        body = json.dumps(document).encode()
        headers["content-type"] = "application/json"
    try:
        try:
            connection.connect()
        except OSError as exc:
            raise BackendUnavailableError(
                f"cannot reach {url}: {_reason(exc)}", seam="server", url=url, reason="unreachable"
            ) from None
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except TimeoutError:
            raise BackendUnavailableError(
                f"the server at {url} did not answer within {timeout:g} s",
                seam="server",
                url=url,
                reason="timeout",
            ) from None
        except OSError as exc:
            raise BackendUnavailableError(
                f"the server at {url} did not answer: {_reason(exc)}",
                seam="server",
                url=url,
                reason="no_answer",
            ) from None
    finally:
        connection.close()
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    if response.status >= 400:
        raise error_from_body(answer, response.status)
    if answer is None:
        raise BackendUnavailableError(
            f"the server at {url} answered {response.status} without JSON", seam="server"
        )
    return answer


def _reason(exc: OSError) -> str:
    """``connection refused``, ``name or service not known``, ``timed out``: the system's
    words without the errno."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]
