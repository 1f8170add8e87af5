"""Alerts over HTTP (:func:`routes`, part of the monitoring capability's contribution).

========================================  ============  ====================================
route                                     role          what
========================================  ============  ====================================
``GET /v1/alerts?state=open&model=``      viewer        incidents, sinks (failing marked),
                                                        active silences
``GET /v1/alerts/{id}``                   viewer        one incident, deliveries, reviews
``POST /v1/alerts/{id}/ack``              deployer      acknowledge (no more repeats)
``GET /v1/silences``                      viewer        silences (active and expired)
``POST /v1/silences``                     deployer      ``{"matchers": {"model": "fraud"},
                                                        "duration": "2h", "comment": "..."}``
                                                        (or ``"ends_at"``: an ISO time)
``DELETE /v1/silences/{id}``              deployer      end a silence now
``POST /v1/alerts/test``                  deployer      ``{"severity": "info"}``: a test
                                                        notification; each sink's result
========================================  ============  ====================================

The contribution also runs :class:`~conveyor.monitoring.alerts.evaluator.AlertLoop` in
the server (startup/shutdown hooks): one evaluator across workers, by lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
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

__all__ = ["chain", "routes"]

Hook = Callable[[], Awaitable[None]]

_SILENCE_BODY = {
    "type": "object",
    "required": ["matchers"],
    "additionalProperties": False,
    "properties": {
        "matchers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "label -> value (a value ending in * matches a prefix)",
        },
        "duration": {"type": "string", "description": "e.g. 2h (default 1h)"},
        "ends_at": {"type": "string", "description": "ISO 8601 time, instead of duration"},
        "comment": {"type": "string"},
    },
}
_TEST_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"severity": {"enum": ["page", "ticket", "info"]}},
}


def chain(*hooks: Hook | None) -> Hook | None:
    """One hook running ``hooks`` in order (None ones skipped)."""
    present = [h for h in hooks if h is not None]
    if not present:
        return None

    async def run() -> None:
        for hook in present:
            await hook()

    return run


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(InvalidInputError(f"not JSON: {exc}", field="body")) from exc
    if not isinstance(document, dict):
        raise BadRequest(InvalidInputError("the body is a JSON object", field="body"))
    return document


def routes(context: AppContext) -> Contribution:
    from conveyor.monitoring.alerts.evaluator import AlertLoop

    project = context.project
    loop = AlertLoop(project)

    async def list_alerts(call: Call) -> Response:
        from conveyor.monitoring.alerts.operations import sinks as _sinks
        from conveyor.monitoring.alerts.store import SqlStore

        query = call.request.query_params
        state = query.get("state", "open")
        limit_text = query.get("limit", "100")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            raise InvalidInputError(f"limit {limit_text!r}: expected 1 to 1000", field="limit")

        def read() -> dict[str, Any]:
            store = SqlStore(project.store)
            found = store.incidents(
                state=None if state == "all" else state,
                model=query.get("model"),
                limit=int(limit_text),
            )
            return {
                "items": [i.to_dict() for i in found],
                "sinks": _sinks(project, store),
                "silences": [s.to_dict() for s in store.silence_list(active_at=datetime.now(UTC))],
                "next_cursor": None,
            }

        return _json(await asyncio.to_thread(read))

    async def show_alert(call: Call) -> Response:
        from conveyor.monitoring.alerts.operations import alert_detail
        from conveyor.monitoring.alerts.store import SqlStore

        found = await asyncio.to_thread(
            alert_detail, SqlStore(project.store), call.params["alert_id"]
        )
        return _json(found)

    async def ack(call: Call) -> Response:
        from conveyor.monitoring.alerts.operations import acknowledge

        incident = await asyncio.to_thread(
            acknowledge, project, call.params["alert_id"], call.actor
        )
        return _json(incident.to_dict())

    async def list_silences(call: Call) -> Response:
        from conveyor.monitoring.alerts.store import SqlStore

        found = await asyncio.to_thread(SqlStore(project.store).silence_list)
        return _json({"items": [s.to_dict() for s in found], "next_cursor": None})

    async def add_silence(call: Call) -> Response:
        from conveyor.durations import parse_duration
        from conveyor.monitoring.alerts.operations import add_silence as add

        body = _object(await call.body())
        unknown = set(body) - {"matchers", "duration", "ends_at", "comment"}
        if unknown:
            raise InvalidInputError(
                f"unknown field(s) {', '.join(sorted(unknown))}", field=sorted(unknown)[0]
            )
        matchers = body.get("matchers")
        if not isinstance(matchers, dict) or not matchers:
            raise InvalidInputError(
                'matchers: an object of label -> value, e.g. {"model": "fraud"}',
                field="matchers",
            )
        if not all(isinstance(v, str) for v in matchers.values()):
            raise InvalidInputError("matchers: every value is a string", field="matchers")
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise InvalidInputError("comment: a string", field="comment")
        now = datetime.now(UTC)
        if body.get("ends_at") is not None:
            if "duration" in body:
                raise InvalidInputError("give duration or ends_at, not both", field="ends_at")
            try:
                ends = datetime.fromisoformat(str(body["ends_at"]))
            except ValueError:
                raise InvalidInputError(
                    f"ends_at {body['ends_at']!r}: expected an ISO 8601 time", field="ends_at"
                ) from None
            ends = ends if ends.tzinfo else ends.replace(tzinfo=UTC)
        else:
            duration = body.get("duration", "1h")
            if not isinstance(duration, str):
                raise InvalidInputError("duration: a string such as 2h", field="duration")
            ends = now + parse_duration(duration, "duration")
        silence = await asyncio.to_thread(add, project, matchers, ends, call.actor, comment)
        return _json(silence.to_dict(), status=201)

    async def delete_silence(call: Call) -> Response:
        from conveyor.monitoring.alerts.operations import end_silence

        silence = await asyncio.to_thread(
            end_silence, project, call.params["silence_id"], call.actor
        )
        return _json(silence.to_dict())

    async def send_test(call: Call) -> Response:
        from conveyor.monitoring.alerts.operations import send_test as run

        body = _object(await call.body())
        unknown = set(body) - {"severity"}
        if unknown:
            raise InvalidInputError(
                f"unknown field(s) {', '.join(sorted(unknown))}", field=sorted(unknown)[0]
            )
        severity = body.get("severity", "info")
        if not isinstance(severity, str):
            raise InvalidInputError("severity: page, ticket or info", field="severity")
        results = await asyncio.to_thread(run, project, severity, 60.0)
        return _json({"items": results, "next_cursor": None})

    tags = ("alerts",)
    state_query = (
        {
            "name": "state",
            "in": "query",
            "required": False,
            "schema": {"enum": ["open", "pending", "firing", "resolved", "all"]},
            "description": "open (default: pending and firing), pending, firing, resolved, all",
        },
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}},
    )
    return Contribution(
        [
            Route(
                "GET",
                "/v1/alerts",
                list_alerts,
                "alerts.read",
                "Alerts (incidents), the sinks' health and the active silences",
                query=state_query,
                tags=tags,
                errors=(422,),
            ),
            Route(
                "POST",
                "/v1/alerts/test",
                send_test,
                "alerts.test",
                "Send a test notification to every sink; each sink's result",
                body=_TEST_BODY,
                tags=tags,
                errors=(400, 422),
            ),
            Route(
                "GET",
                "/v1/alerts/{alert_id}",
                show_alert,
                "alerts.read",
                "One alert: its incident, deliveries and review items",
                tags=tags,
                errors=(404,),
            ),
            Route(
                "POST",
                "/v1/alerts/{alert_id}/ack",
                ack,
                "alerts.manage",
                "Acknowledge an alert (no more repeat notifications)",
                tags=tags,
                errors=(404,),
            ),
            Route(
                "GET",
                "/v1/silences",
                list_silences,
                "alerts.read",
                "Silences, newest expiry first",
                tags=tags,
            ),
            Route(
                "POST",
                "/v1/silences",
                add_silence,
                "alerts.manage",
                "Silence the alerts whose labels match, until it expires",
                body=_SILENCE_BODY,
                tags=tags,
                errors=(400, 422),
            ),
            Route(
                "DELETE",
                "/v1/silences/{silence_id}",
                delete_silence,
                "alerts.manage",
                "End a silence now",
                tags=tags,
                errors=(404,),
            ),
        ],
        startup=loop.start,
        shutdown=loop.stop,
    )
