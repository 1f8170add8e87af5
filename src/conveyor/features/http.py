"""The feature store's HTTP routes.

``POST /v1/features/get``: online feature values for entity keys (role viewer)::

    {"service": "fraud", "entities": [{"customer_id": 42}]}
    {"features": ["spend:amount", "spend:amount_sum_24h"], "entities": [...]}

The answer holds, per entity row, the values, each value's status (``present``,
``missing``, ``expired``, ``computed`` for on-demand) and its event time. An unknown
service or feature is a 404 naming it; a backend that does not answer, a 503.

``POST /v1/features/push``: fresh rows of a view, online at once and into its offline
log (role deployer; :mod:`conveyor.features.push`)::

    {"view": "spend", "rows": [{"customer_id": 42, "ts": "2027-02-01T12:00:00Z",
                                "amount": 12.5}]}

Every row is checked first: a wrong type, a missing or unknown column is a 400
(``invalid_input``) naming the field and the row, and nothing is written; an unknown
view is a 404 naming it; a backend that does not answer, a 503.
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


def _object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 naming ``body`` otherwise."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(InvalidInputError(f"not JSON: {exc}", field="body")) from exc
    if not isinstance(document, dict):
        raise BadRequest(InvalidInputError("the body is a JSON object", field="body"))
    return document


def _request(body: bytes) -> tuple[str | list[str], list[dict[str, Any]]]:
    document = _object(body)
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


_PUSH_BODY = {
    "type": "object",
    "required": ["view", "rows"],
    "properties": {
        "view": {"type": "string"},
        "rows": {"type": "array", "items": {"type": "object"}, "minItems": 1},
    },
}


def _push_request(body: bytes) -> tuple[str, list[dict[str, Any]]]:
    document = _object(body)
    view = document.get("view")
    if not isinstance(view, str) or not view:
        raise BadRequest(InvalidInputError("view is the name of a feature view", field="view"))
    rows = document.get("rows")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise BadRequest(InvalidInputError("rows is a non-empty list of objects", field="rows"))
    return view, rows


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

    async def push_rows(call: Call) -> Response:
        from conveyor.features.push import push

        view, rows = _push_request(await call.body())
        try:
            pushed = await asyncio.to_thread(push, project, view, rows, actor=call.actor)
        except InvalidInputError as exc:  # a bad row: the request's fault, named
            raise BadRequest(exc) from exc
        return Response(orjson.dumps(pushed.to_dict()), media_type="application/json")

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
            ),
            Route(
                "POST",
                "/v1/features/push",
                push_rows,
                "features.push",
                "Push fresh rows of a feature view: online at once, and to its offline log",
                body=_PUSH_BODY,
                tags=("features",),
                errors=(404, 503),
            ),
        ]
    )
