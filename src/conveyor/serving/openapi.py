"""The server's published OpenAPI 3 document (``GET /openapi.json``).

Written as data rather than generated from handlers: the handlers take raw
bodies (for speed and for the v2 binary extension), so the schema says what
a client may send, and schemathesis checks the server against it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}
_SCALAR = {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "null"}]}
_NATIVE = {
    "type": "object",
    "properties": {
        "records": {"type": "array", "items": {"type": "object", "additionalProperties": _SCALAR}},
        "columns": {"type": "object", "additionalProperties": {"type": "array", "items": _SCALAR}},
        "attributes": {"type": "object", "additionalProperties": _SCALAR},
        "id": {"type": "string"},
    },
}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string"},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
_INFER = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {"type": "object"}},
    },
}
_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_ERRORS = {
    status: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
    for status, text in (
        ("400", "undecodable body"),
        ("401", "missing or unknown API key"),
        ("403", "the key's role does not allow this"),
        ("404", "unknown model or version"),
        ("413", "body too large"),
        ("422", "wrong shape, type or missing column"),
        ("429", "rate limited (Retry-After)"),
        ("503", "queue full (Retry-After)"),
    )
}


def _op(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    params: list[Any] | None = None,
    ok: str = "application/json",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": {"description": "ok", "content": {ok: {"schema": {}}}}, **_ERRORS},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI document of this server version."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "Conveyor model server", "version": version},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/v1/models": {"get": _op("Deployed models and their routes")},
            "/v1/models/{model}/predict": {
                "post": _op(
                    "Predict (native JSON: records or columns)", body=_NATIVE, params=[_MODEL]
                )
            },
            "/v1/models/{model}/route": {
                "get": _op("The model's live route", params=[_MODEL]),
                "put": _op(
                    "Set the route (deployer)",
                    params=[_MODEL],
                    body={
                        "type": "object",
                        "required": ["policy"],
                        "properties": {"policy": {"type": "object"}, "reason": {"type": "string"}},
                    },
                ),
            },
            "/v1/models/{model}/rollback": {
                "post": _op("Restore the previous route (deployer)", params=[_MODEL])
            },
            "/v2": {"get": _op("Server metadata")},
            "/v2/health/live": {"get": _op("Liveness")},
            "/v2/health/ready": {"get": _op("Readiness: routed versions loaded")},
            "/v2/models/{model}": {"get": _op("Model metadata", params=[_MODEL])},
            "/v2/models/{model}/versions/{version}": {
                "get": _op("Model version metadata", params=[_MODEL, _VERSION])
            },
            "/v2/models/{model}/ready": {"get": _op("Model readiness", params=[_MODEL])},
            "/v2/models/{model}/versions/{version}/ready": {
                "get": _op("Model version readiness", params=[_MODEL, _VERSION])
            },
            "/v2/models/{model}/infer": {
                "post": _op("Inference (Open Inference Protocol v2)", body=_INFER, params=[_MODEL])
            },
            "/v2/models/{model}/versions/{version}/infer": {
                "post": _op("Inference on one version", body=_INFER, params=[_MODEL, _VERSION])
            },
            "/metrics": {"get": _op("Prometheus metrics", ok="text/plain")},
        },
    }
