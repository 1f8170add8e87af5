"""Governance's routes: the audit trail over HTTP (``GET /v1/audit``, action ``audit.read``).

They live in the HTTP layer, as governance's commands live in the CLI's
package: governance sits below ``web`` (the pipeline authenticates through
it), so its own endpoints are declared here and mounted from its declaration.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError
from conveyor.web.app import Contribution
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["routes"]

_QUERY = tuple(
    {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": what}
    for name, kind, what in (
        ("actor", "string", "Only what this caller did (key:NAME)."),
        ("subject", "string", "Only events about this subject."),
        ("kind", "string", "Only this audit kind."),
        ("since", "string", "ISO 8601 time, inclusive."),
        ("until", "string", "ISO 8601 time, exclusive."),
        ("limit", "integer", "Events per page (at most 1000)."),
        ("cursor", "string", "The next_cursor of the previous page."),
    )
)


def routes(context: AppContext) -> Contribution:
    from conveyor.governance.audit import audit_trail

    events = context.project.events

    async def audit(call: Call) -> Response:
        query = call.request.query_params
        limit_text = query.get("limit", "100")
        if not (limit_text.isascii() and limit_text.isdigit()):
            raise InvalidInputError(f"limit {limit_text!r} is not a number", field="limit")
        page = await asyncio.to_thread(
            audit_trail,
            events,
            by=query.get("actor"),
            subject=query.get("subject"),
            kind=query.get("kind"),
            since=_time(query.get("since"), "since"),
            until=_time(query.get("until"), "until"),
            limit=int(limit_text),
            cursor=query.get("cursor"),
        )
        body = {"items": [e.to_dict() for e in page.items], "next_cursor": page.next_cursor}
        return Response(orjson.dumps(body, default=str), media_type="application/json")

    return Contribution(
        [
            Route(
                "GET",
                "/v1/audit",
                audit,
                "audit.read",
                "The audit trail, newest first",
                query=_QUERY,
                tags=("governance",),
                errors=(422,),
            )
        ]
    )


def _time(text: str | None, field: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(f"{field} {text!r} is not an ISO 8601 time", field=field) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
