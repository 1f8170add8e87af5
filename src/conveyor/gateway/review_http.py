"""The review queue on the server's API (see :mod:`conveyor.guardrails.review`)::

    GET  /v1/reviews                  ?status=pending|approved|rejected|all&model=&limit=50
    GET  /v1/reviews/{id}             the conversation, the answers, the decisions
    POST /v1/reviews/{id}/approve     {"rating": 1-5 | "up" | "down", "comment": "..."}
    POST /v1/reviews/{id}/reject      (the same body; both fields optional)

Every route needs ``llm.review`` (role deployer): a review holds a conversation.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError
from conveyor.web.bodies import json_object
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["ACTION", "review_routes"]

#: The action every review route needs.
ACTION = "llm.review"

_VERDICT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rating": {
            "oneOf": [
                {"type": "integer", "minimum": 1, "maximum": 5},
                {"type": "string", "enum": ["up", "down", "1", "2", "3", "4", "5"]},
            ],
            "description": "The answer's human score: 1 to 5, or up / down.",
        },
        "comment": {"type": "string", "maxLength": 4000},
    },
}
_QUERY = tuple(
    {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
    for name, d in (
        ("status", "pending (default), approved, rejected or all"),
        ("model", "Only the calls of this model alias or deployment"),
        ("limit", "At most this many (1 to 1000; default 50)"),
    )
)


def review_routes(context: AppContext) -> list[Route]:
    from conveyor.guardrails.review import Reviews

    project = context.project
    reviews = Reviews(project.store, project.events)

    def json(body: object) -> Response:
        return Response(orjson.dumps(body), media_type="application/json")

    async def listed(call: Call) -> Response:
        query = call.request.query_params
        status = query.get("status", "pending")
        limit_text = query.get("limit", "50")
        try:
            limit = int(limit_text)
        except ValueError:
            raise InvalidInputError(
                f"limit is a whole number, got {limit_text!r}", field="limit"
            ) from None
        items = await asyncio.to_thread(
            reviews.list,
            None if status == "all" else status,
            model=query.get("model"),
            limit=limit,
        )
        return json({"items": items, "next_cursor": None})

    async def one(call: Call) -> Response:
        return json(await asyncio.to_thread(reviews.get, call.params["id"]))

    def decide(verdict: str) -> Any:
        async def handler(call: Call) -> Response:
            body = json_object(await call.body(), {"rating": (int, str), "comment": str})
            review = await asyncio.to_thread(
                lambda: reviews.decide(
                    call.params["id"],
                    verdict,  # type: ignore[arg-type]
                    actor=call.actor,
                    rating=body.get("rating"),
                    comment=body.get("comment"),
                )
            )
            return json(review)

        return handler

    return [
        Route(
            "GET",
            "/v1/reviews",
            listed,
            ACTION,
            "Calls a guardrail flagged, held for review (pending, oldest first, by default)",
            query=_QUERY,
            tags=("llm",),
            errors=(401, 403, 422),
        ),
        Route(
            "GET",
            "/v1/reviews/{id}",
            one,
            ACTION,
            "A review: the conversation as it went upstream, the answers, the decisions",
            tags=("llm",),
            errors=(401, 403, 404),
        ),
        Route(
            "POST",
            "/v1/reviews/{id}/approve",
            decide("approved"),
            ACTION,
            "Approve a call held for review (once), with a rating of its answer",
            body=_VERDICT,
            tags=("llm",),
            errors=(401, 403, 404, 409, 422),
        ),
        Route(
            "POST",
            "/v1/reviews/{id}/reject",
            decide("rejected"),
            ACTION,
            "Reject a call held for review (once), with a rating of its answer",
            body=_VERDICT,
            tags=("llm",),
            errors=(401, 403, 404, 409, 422),
        ),
    ]
