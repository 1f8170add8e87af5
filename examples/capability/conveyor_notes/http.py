"""``GET|POST /v1/notes``: routes the app mounts behind the shared pipeline (key, role,
rate limit, body limit), described in the generated OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError
from conveyor.web.app import Contribution
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

_NOTE = {
    "type": "object",
    "required": ["subject", "text"],
    "properties": {"subject": {"type": "string"}, "text": {"type": "string"}},
}


def routes(context: AppContext) -> Contribution:
    notes = context.project.notes

    async def add(call: Call) -> Response:
        try:
            body = orjson.loads(await call.body())
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"not JSON: {exc}", field="body") from exc
        if not isinstance(body, dict):
            raise InvalidInputError('the body is {"subject": ..., "text": ...}', field="body")
        note = await asyncio.to_thread(
            notes.add, str(body.get("subject", "")), str(body.get("text", "")), actor=call.actor
        )
        return Response(orjson.dumps(note.to_dict()), 201, media_type="application/json")

    async def list_notes(call: Call) -> Response:
        subject = call.request.query_params.get("subject")
        found = await asyncio.to_thread(notes.list, subject)
        body = {"items": [n.to_dict() for n in found], "next_cursor": None}
        return Response(orjson.dumps(body), media_type="application/json")

    return Contribution(
        [
            Route(
                "POST", "/v1/notes", add, "notes.write", "Add a note", body=_NOTE, tags=("notes",)
            ),
            Route(
                "GET",
                "/v1/notes",
                list_notes,
                "notes.read",
                "List notes",
                query=(
                    {
                        "name": "subject",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ),
                tags=("notes",),
            ),
        ]
    )
