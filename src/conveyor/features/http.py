"""``POST /v1/features/get``: online feature values for entity keys (role viewer).

::

    {"service": "fraud", "entities": [{"customer_id": 42}]}
    {"features": ["spend:amount", "spend:amount_sum_24h"], "entities": [...]}

The answer holds, per entity row, the values, each value's status (``present``,
``missing``, ``expired``, ``computed`` for on-demand) and its event time. An unknown
service or feature is a 404 naming it; a backend that does not answer, a 503.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError
from conveyor.web.app import Contribution
from conveyor.web.errors import BadRequest
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

_BODY = {
    "type": "object",
    "required": ["entities"],
    "properties": {
        "service": {"type": "string"},
        "features": {"type": "array", "items": {"type": "string"}},
        "entities": {"type": "array", "items": {"type": "object"}, "minItems": 1},
    },
}


def _request(body: bytes) -> tuple[str | list[str], list[dict[str, Any]]]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(InvalidInputError(f"not JSON: {exc}", field="body")) from exc
    if not isinstance(document, dict):
        raise BadRequest(InvalidInputError("the body is a JSON object", field="body"))
    service, features = document.get("service"), document.get("features")
    if (service is None) == (features is None):
        raise BadRequest(
            InvalidInputError(
                'the body names exactly one of "service" and "features"', field="service"
            )
        )
    if service is not None and not isinstance(service, str):
        raise BadRequest(InvalidInputError("service is a string", field="service"))
    if features is not None and (
        not isinstance(features, list) or not all(isinstance(f, str) for f in features)
    ):
        raise BadRequest(InvalidInputError("features is a list of strings", field="features"))
    entities = document.get("entities")
    if (
        not isinstance(entities, list)
        or not entities
        or not all(isinstance(e, dict) for e in entities)
    ):
        raise BadRequest(
            InvalidInputError("entities is a non-empty list of objects", field="entities")
        )
    if service is not None:
        return service, entities
    return [str(f) for f in features or ()], entities


def routes(context: AppContext) -> Contribution:
    project = context.project

    async def get_features(call: Call) -> Response:
        from conveyor.features.serving_read import online_features

        wanted, entities = _request(await call.body())
        deps = context.dependencies
        if deps is None:
            rows = await asyncio.to_thread(online_features, project, entities, wanted)
        else:
            # The online store behind the server's guard (the enricher's breaker, "online"):
            # a refused or hung backend is a 503 after at most the timeout, never an empty
            # answer, and a hang holds the guard's own threads only, not the event loop.
            rows = await deps.call(
                "online", deps.limits.store_timeout_s, online_features, project, entities, wanted
            )
        return Response(orjson.dumps({"results": rows}), media_type="application/json")

    return Contribution(
        [
            Route(
                "POST",
                "/v1/features/get",
                get_features,
                "features.read",
                "Online feature values for entity keys",
                body=_BODY,
                tags=("features",),
                errors=(404, 503),
            )
        ]
    )
