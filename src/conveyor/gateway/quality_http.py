"""The gateway's reports on the server's API (see :mod:`conveyor.gateway.quality`)::

    POST /v1/llm/feedback    one record or a list: {request_id, score?, reference?, answer?}
    GET  /v1/llm/quality     ?since=7d&until=...&model=fast: per model, calls, feedback,
                             mean human score, mean BLEU and ROUGE-1/2/L
    GET  /v1/llm/usage       ?since=1d&by=key: calls, tokens and cost per group
    GET  /v1/llm/budgets     the budgets' counters (spent, reserved, limit, per period)

Sending feedback needs ``llm.call`` (the application that made the call), reading a
report ``llm.read`` (viewer).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.durations import DURATION_FORMS, parse_moment
from conveyor.errors import InvalidInputError
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["quality_routes"]

_RECORD = {
    "type": "object",
    "required": ["request_id"],
    "properties": {
        "request_id": {"type": "string", "description": "The call's x-request-id."},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reference": {"type": "string", "description": "The answer that was expected."},
        "answer": {"type": "string", "description": "The answer received (with reference)."},
        "comment": {"type": "string"},
    },
}
_QUERY = tuple(
    {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
    for name, d in (
        ("since", f"Start: an age ({DURATION_FORMS}) or an ISO 8601 time; default 7d."),
        ("until", "End (exclusive): an age or an ISO 8601 time; default now."),
        ("model", "Only this model alias or deployment, as requests named it."),
    )
)


def _records(raw: bytes) -> list[Any]:
    try:
        body = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the body is not JSON: {exc}", field="body") from None
    records = body if isinstance(body, list) else [body]
    if not records or len(records) > 10_000:
        raise InvalidInputError("send 1 to 10,000 records", field="body")
    return records


def quality_routes(context: AppContext) -> list[Route]:
    project = context.project

    async def feedback(call: Call) -> Response:
        from conveyor.gateway.quality import record_llm_feedback

        records = _records(await call.body())
        done = await asyncio.to_thread(record_llm_feedback, project, records, actor=call.actor)
        return Response(
            orjson.dumps({"recorded": len(done), "records": done}), media_type="application/json"
        )

    async def report(call: Call, default_since: str, make: Any) -> Any:
        """``make(since, until, query)`` over the period the query names, in a thread,
        once what this server accepted up to now is in the log."""
        query = call.request.query_params
        now = datetime.now(UTC)
        since = parse_moment(query.get("since", default_since), now, option="since")
        until_text = query.get("until")
        until = None if until_text is None else parse_moment(until_text, now, option="until")

        def run() -> Any:
            project.events.flush()
            return make(since, until, query)

        return await asyncio.to_thread(run)

    async def quality(call: Call) -> Response:
        from conveyor.gateway.quality import quality_report

        found = await report(
            call,
            "7d",
            lambda since, until, query: quality_report(
                project, since=since, until=until, model=query.get("model")
            ),
        )
        return Response(orjson.dumps({"models": found}), media_type="application/json")

    async def usage(call: Call) -> Response:
        from conveyor.gateway.quality import usage_report

        rows = await report(
            call,
            "1d",
            lambda since, until, query: usage_report(
                project, since=since, until=until, by=query.get("by", "model")
            ),
        )
        return Response(orjson.dumps({"rows": rows}), media_type="application/json")

    async def prefixes(call: Call) -> Response:
        from conveyor.gateway.prompts import prefix_report

        rows = await report(
            call,
            "1d",
            lambda since, until, query: prefix_report(
                project, since=since, until=until, model=query.get("model")
            ),
        )
        return Response(orjson.dumps({"prefixes": rows}), media_type="application/json")

    ledgers: list[Any] = []  # opened on the first report, kept for the next

    async def budgets(call: Call) -> Response:
        from conveyor.gateway.budgets import ledger_of

        if not ledgers:
            ledgers.append(ledger_of(project))
        rows = await asyncio.to_thread(ledgers[0].counters)
        return Response(orjson.dumps({"counters": rows}), media_type="application/json")

    return [
        Route(
            "GET",
            "/v1/llm/usage",
            usage,
            "llm.read",
            "Calls, tokens and cost of the gateway's calls, by model, key, user, team...",
            query=(
                *_QUERY[:2],
                {
                    "name": "by",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "model (default), deployment, key, user, team, conversation",
                },
            ),
            tags=("llm",),
            errors=(401, 403, 422),
        ),
        Route(
            "GET",
            "/v1/llm/budgets",
            budgets,
            "llm.read",
            "The budgets' counters: spent, reserved by calls in flight, limit, per period",
            tags=("llm",),
            errors=(401, 403),
        ),
        Route(
            "POST",
            "/v1/llm/feedback",
            feedback,
            "llm.call",
            "Feedback on LLM calls: a human score, a reference answer (scored with BLEU, ROUGE)",
            body={"oneOf": [_RECORD, {"type": "array", "items": _RECORD}]},
            tags=("llm",),
            errors=(401, 403, 422),
        ),
        Route(
            "GET",
            "/v1/llm/prefixes",
            prefixes,
            "llm.read",
            "Prompt prefixes per model (leading system messages) and how often the "
            "providers' prompt caches served them",
            query=_QUERY,
            tags=("llm",),
            errors=(401, 403, 422),
        ),
        Route(
            "GET",
            "/v1/llm/quality",
            quality,
            "llm.read",
            "Generation quality per model: human scores, BLEU and ROUGE against references",
            query=_QUERY,
            tags=("llm",),
            errors=(401, 403, 422),
        ),
    ]
