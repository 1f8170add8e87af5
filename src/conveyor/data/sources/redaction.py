"""Keep secrets out of descriptions and errors: URL passwords, tokens in query strings, headers."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from conveyor.backends import redact

__all__ = ["REDACTED", "is_secret_name", "redact_headers", "redact_url", "scrub"]

REDACTED = "***"

# Substrings of query-parameter and header names whose values are credentials.
_SECRET_MARKERS = (
    "auth",
    "token",
    "secret",
    "password",
    "passwd",
    "key",
    "cookie",
    "signature",
    "sig",
    "credential",
    "session",
)


def is_secret_name(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redact_url(url: str) -> str:
    """``url`` with its password and any secret-looking query values replaced by ``***``."""
    url = redact(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(is_secret_name(key) for key, _ in pairs):
        return url
    query = urlencode(
        [(key, REDACTED if is_secret_name(key) else value) for key, value in pairs], safe="*"
    )
    return urlunsplit(parts._replace(query=query))


def redact_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Headers with credential values (Authorization, Cookie, X-API-Key...) replaced."""
    return {
        key: REDACTED if is_secret_name(key) else value for key, value in (headers or {}).items()
    }


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every occurrence of each non-empty secret replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
