"""The gateway's stored routes over HTTP (see :mod:`conveyor.gateway.routes_store`)::

GET    /v1/llm/routes                     the stored routes (llm.read)
GET    /v1/llm/routes/{alias}             one, with its revision (llm.read)
GET    /v1/llm/routes/{alias}/history     every route it has had, newest first (llm.read)
PUT    /v1/llm/routes/{alias}             {"deployments": [...], "weights": {...},
                                           "rules": [...], "reason": "...",
                                           "revision": N} (llm.manage)
POST   /v1/llm/routes/{alias}/rollback    {"reason": "..."}: the route before (llm.manage)
DELETE /v1/llm/routes/{alias}             back to the spec's route (llm.manage)

``revision`` in a PUT makes it conditional: the change is made only if the route is at
that revision (0: only if it has none), else 409 ``concurrent_update``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError
from conveyor.web.bodies import json_object, require
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.gateway.settings import GatewaySpec
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["route_routes"]

_RULE = {
    "type": "object",
    "description": "A routing rule (conveyor.gateway.rules): when, then to or deployments.",
    "properties": {
        "name": {"type": "string"},
        "when": {
            "type": "object",
            "properties": {
                "teams": {"type": "array", "items": {"type": "string"}},
                "tiers": {"type": "array", "items": {"type": "string"}},
                "keys": {"type": "array", "items": {"type": "string"}},
                "roles": {"type": "array", "items": {"type": "string"}},
                "complexity": {"type": "string", "enum": ["simple", "complex"]},
            },
        },
        "to": {"type": "string"},
        "deployments": {"type": "array", "items": {"type": "string"}},
        "weights": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}
_BODY = {
    "type": "object",
    "required": ["deployments"],
    "additionalProperties": False,
    "properties": {
        "deployments": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "weights": {"type": "object", "additionalProperties": {"type": "number"}},
        "rules": {"type": "array", "items": _RULE},
        "reason": {"type": "string"},
        "revision": {"type": "integer", "minimum": 0},
    },
}
_ROLLBACK_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"reason": {"type": "string"}},
}


_PUT_FIELDS: dict[str, Any] = {
    "deployments": list,
    "weights": dict,
    "rules": list,
    "reason": str,
    "revision": int,
}


def route_routes(context: AppContext, spec: GatewaySpec) -> list[Route]:
    from conveyor.gateway.routes_store import LlmRoutes

    project = context.project
    routes = LlmRoutes(project.store, project.events)

    def json(body: object) -> Response:
        return Response(orjson.dumps(body), media_type="application/json")

    async def listed(call: Call) -> Response:
        return json({"routes": list((await asyncio.to_thread(routes.all)).values())})

    async def one(call: Call) -> Response:
        return json(await asyncio.to_thread(routes.get, call.params["alias"]))

    async def history(call: Call) -> Response:
        found = await asyncio.to_thread(routes.history, call.params["alias"])
        return json({"alias": call.params["alias"], "history": found})

    async def put(call: Call) -> Response:
        body = json_object(await call.body(), _PUT_FIELDS)
        require(body, "deployments")
        deployments = body["deployments"]
        if not all(isinstance(d, str) for d in deployments):
            raise InvalidInputError("deployments: a list of names", field="deployments")
        route = await asyncio.to_thread(
            lambda: routes.set(
                spec,
                call.params["alias"],
                deployments,
                body.get("weights"),
                body.get("rules"),
                actor=call.actor,
                reason=body.get("reason"),
                expected=body.get("revision"),
            )
        )
        return json(route)

    async def rollback(call: Call) -> Response:
        reason = json_object(await call.body(), {"reason": str}).get("reason")
        route = await asyncio.to_thread(
            lambda: routes.rollback(call.params["alias"], actor=call.actor, reason=reason)
        )
        return json(route)

    async def delete(call: Call) -> Response:
        previous = await asyncio.to_thread(routes.delete, call.params["alias"], actor=call.actor)
        return json({"deleted": previous})

    return [
        Route(
            "GET",
            "/v1/llm/routes",
            listed,
            "llm.read",
            "The gateway's routes kept in the store",
            tags=("llm",),
            errors=(401, 403),
        ),
        Route(
            "GET",
            "/v1/llm/routes/{alias}",
            one,
            "llm.read",
            "One stored route of the gateway, with its revision",
            tags=("llm",),
            errors=(401, 403, 404),
        ),
        Route(
            "GET",
            "/v1/llm/routes/{alias}/history",
            history,
            "llm.read",
            "Every route an alias of the gateway has had in the store, newest first",
            tags=("llm",),
            errors=(401, 403),
        ),
        Route(
            "PUT",
            "/v1/llm/routes/{alias}",
            put,
            "llm.manage",
            "Route a model alias of the gateway to deployments, with weights and rules "
            "(every server within seconds)",
            body=_BODY,
            tags=("llm",),
            errors=(401, 403, 409, 422),
        ),
        Route(
            "POST",
            "/v1/llm/routes/{alias}/rollback",
            rollback,
            "llm.manage",
            "Give a model alias of the gateway the stored route it had before",
            body=_ROLLBACK_BODY,
            tags=("llm",),
            errors=(401, 403, 404, 409, 422),
        ),
        Route(
            "DELETE",
            "/v1/llm/routes/{alias}",
            delete,
            "llm.manage",
            "Delete a stored route: the alias is the spec's again",
            tags=("llm",),
            errors=(401, 403, 404),
        ),
    ]
