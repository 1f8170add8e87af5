"""The OpenAPI 3 document of an app, generated from its route table.

Each :class:`~conveyor.web.routing.Route` says its method, path, summary,
action, body and answer; this module turns the list into the document served
at ``GET /openapi.json``. Because requests are matched against the same list,
the document cannot describe a route the app does not have, or miss one.
Handlers read raw bodies (for speed, and for binary formats), so the schemas
say what a client may send; schemathesis checks the server against them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conveyor.web.routing import Route

__all__ = ["ERROR_SCHEMA", "openapi_document"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "request_id": {"type": "string"},
    },
}
_WHY = {
    400: "undecodable body",
    401: "missing or unknown API key",
    403: "the key's role does not allow this action",
    404: "unknown model, version or record",
    409: "conflict with the current state",
    413: "body too large",
    422: "invalid input (wrong shape, type or missing field)",
    429: "rate limited (Retry-After)",
    503: "overloaded or a dependency is unavailable (Retry-After)",
}


def openapi_document(routes: Iterable[Route], *, title: str, version: str) -> dict[str, Any]:
    """The document for ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": {"Error": ERROR_SCHEMA},
        },
        "paths": dict(sorted(paths.items())),
    }


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.params
        ]
        + [dict(q) for q in route.query],
    }
    if route.tags:
        op["tags"] = list(route.tags)
    statuses = set(route.errors) | {503}
    if route.action is None:
        op["security"] = []  # open: probes, the document itself
    else:
        op["security"] = [{"bearer": []}, {"apiKey": []}]
        op["description"] = f"Needs a key whose role allows `{route.action}`."
        statuses |= {401, 403, 429}
    if route.body is not None:
        content: dict[str, Any] = {}
        for media in route.body_media:
            schema = route.body if media == "application/json" else {"type": "string"}
            content[media] = {"schema": dict(schema)}
        op["requestBody"] = {"required": True, "content": content}
        statuses |= {400, 413, 422}
    ok_schema = dict(route.response) if route.response is not None else {}
    op["responses"] = {
        "200": {"description": "ok", "content": {route.response_media: {"schema": ok_schema}}},
        **{
            str(status): {
                "description": _WHY.get(status, "error"),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for status in sorted(statuses)
        },
    }
    return op


def _operation_id(route: Route) -> str:
    words = [p.strip("{}") for p in route.path.strip("/").split("/") if p] or ["root"]
    return "_".join([route.method.lower(), *words])
