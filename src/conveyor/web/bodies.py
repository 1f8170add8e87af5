"""A JSON request body as an object of known fields, each of its declared type.

::

    body = json_object(await call.body(), {"model": str, "version": int, "steps": (str, list)})

An empty body is ``{}``; anything else that is not a JSON object, a field not
declared, a value of another type (``true`` is not an ``int``) or text holding a
NUL byte (which PostgreSQL refuses in text, and a C library cuts at) raises
:class:`~conveyor.errors.InvalidInputError` naming the field (a 422). ``null``
is accepted for every field: say which are required with :func:`require`.
"""

from __future__ import annotations

from typing import Any

import orjson

from conveyor.errors import InvalidInputError

__all__ = ["json_object", "require"]


def json_object(body: bytes, fields: dict[str, Any]) -> dict[str, Any]:
    """``body`` decoded, every key one of ``fields`` and every value of its type(s)."""
    if not body.strip():
        return {}
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"not JSON: {exc}", field="body") from exc
    if not isinstance(document, dict):
        raise InvalidInputError("the body is a JSON object", field="body")
    for key, value in document.items():
        if key not in fields:
            raise InvalidInputError(f"unknown field {key!r}", field=key)
        kinds = fields[key] if isinstance(fields[key], tuple) else (fields[key],)
        # JSON's true is a Python int: only a field that takes booleans takes it.
        bad_bool = isinstance(value, bool) and bool not in kinds
        if value is not None and (not isinstance(value, kinds) or bad_bool):
            raise InvalidInputError(f"{key}: wrong type {type(value).__name__}", field=key)
        if isinstance(value, str) and "\x00" in value:
            raise InvalidInputError(f"{key} holds a NUL byte (\\u0000)", field=key)
    return document


def require(body: dict[str, Any], *keys: str) -> None:
    """Each of ``keys`` is present and not null in ``body``."""
    for key in keys:
        if body.get(key) is None:
            raise InvalidInputError(f"{key} is required", field=key)
