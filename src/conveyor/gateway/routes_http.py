"""The gateway's stored routes over HTTP (see :mod:`conveyor.gateway.routes_store`)::

GET    /v1/llm/routes            the stored routes (llm.read)
PUT    /v1/llm/routes/{alias}    {"deployments": [...], "weights": {...}} (llm.manage)
DELETE /v1/llm/routes/{alias}    back to the spec's route (llm.manage)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.gateway.settings import GatewaySpec
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["route_routes"]

_BODY = {
    "type": "object",
    "required": ["deployments"],
    "additionalProperties": False,
    "properties": {
        "deployments": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "weights": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}


def route_routes(context: AppContext, spec: GatewaySpec) -> list[Route]:
    from conveyor.gateway.routes_store import LlmRoutes

    project = context.project
    routes = LlmRoutes(project.store, project.events)

    def json(body: object) -> Response:
        return Response(orjson.dumps(body), media_type="application/json")

    async def listed(call: Call) -> Response:
        return json({"routes": list((await asyncio.to_thread(routes.all)).values())})

    async def put(call: Call) -> Response:
        try:
            body = orjson.loads(await call.body())
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"the body is not JSON: {exc}", field="body") from None
        if not isinstance(body, dict) or not isinstance(body.get("deployments"), list):
            raise InvalidInputError("the body is {deployments: [...], weights?}", field="body")
        weights = body.get("weights") or {}
        if not isinstance(weights, dict):
            raise InvalidInputError("'weights' maps deployments to numbers", field="weights")
        route = await asyncio.to_thread(
            routes.set,
            spec,
            call.params["alias"],
            body["deployments"],
            weights,
            actor=call.actor,
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
            "PUT",
            "/v1/llm/routes/{alias}",
            put,
            "llm.manage",
            "Route a model alias of the gateway to deployments (every server within seconds)",
            body=_BODY,
            tags=("llm",),
            errors=(401, 403, 422),
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
