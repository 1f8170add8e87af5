"""Ground truth and model quality over HTTP.

``POST /v1/feedback`` (role predictor, ``monitoring.feedback``): one record, a list of
records, or ``{"records": [...]}`` (at most 10,000)::

    {"request_id": "9f1c...", "label": 1}
    {"model": "churn", "keys": {"customer_id": 42}, "time": "2026-12-09T10:00:00Z", "value": 120}

Every record is checked before any is written: a malformed one is a 422
(``invalid_input``) whose ``field`` names it (``records[3].label``) and whose ``reason``
is a stable word (``no_label_or_value``, ``bad_time``, ``unknown_field``...); a body that
is not JSON is a 400. The answer counts what was written (``accepted``, ``by_request_id``,
``by_key``). Feedback for a request id the log does not hold is written all the same and
shows in the quarantine (:mod:`conveyor.monitoring.feedback`).

``GET /v1/feedback/quarantine?since=7d`` (viewer): feedback that joins no prediction, by
reason. ``GET /v1/monitor/quality?model=fraud&since=7d&window=1d`` (viewer): quality per
version, arm and window (:func:`conveyor.monitoring.quality.quality_report`).
``GET /v1/monitor/concept-drift?model=fraud&window=1d`` (viewer): the concept-drift
judgment (:func:`conveyor.monitoring.quality.concept_drift`), computed, recorded nowhere.
"""

from __future__ import annotations

import asyncio
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

__all__ = ["routes"]

_RECORD = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "row": {"type": "integer", "minimum": 0},
        "model": {"type": "string"},
        "keys": {"type": "object"},
        "time": {"type": "string", "format": "date-time"},
        "label": {"type": ["string", "number", "integer", "boolean"]},
        "value": {"type": "number"},
    },
    "additionalProperties": False,
}
_BODY = {
    "oneOf": [
        _RECORD,
        {"type": "array", "items": _RECORD},
        {"type": "object", "properties": {"records": {"type": "array", "items": _RECORD}}},
    ]
}


def _param(name: str, what: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": {"type": "string"},
        "description": what,
    }


_RANGE = (
    _param("since", "Start: an age (7d) or an ISO 8601 time; default 7d."),
    _param("until", "End (exclusive): an age or an ISO 8601 time; default now."),
)
_QUALITY_QUERY = (
    _param("model", "The model.", required=True),
    *_RANGE,
    _param("window", "Window length (default monitoring.quality.window, 1d)."),
    _param("version", "Only this version."),
    _param("metrics", "Comma-separated metric names (default: the task's)."),
)
_DRIFT_QUERY = (
    _param("model", "The model.", required=True),
    _param("window", "The recent window judged (default monitoring.quality.concept_drift)."),
    _param("metric", "The metric judged."),
    _param("reference", "registry or window."),
    _param("version", "The version judged (default: the most labelled)."),
)


def records_of(body: bytes) -> list[Any]:
    """The body's records: a record, a list, or ``{"records": [...]}``; 400 if not JSON."""
    from conveyor.monitoring.feedback import MAX_RECORDS

    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(InvalidInputError(f"not JSON: {exc}", field="body")) from exc
    if isinstance(document, dict) and set(document) == {"records"}:
        document = document["records"]
        if not isinstance(document, list):
            raise InvalidInputError("records is a list of records", field="records")
    records = document if isinstance(document, list) else [document]
    if not records:
        raise InvalidInputError("no feedback record in the body", field="records")
    if len(records) > MAX_RECORDS:
        raise InvalidInputError(
            f"{len(records)} records: at most {MAX_RECORDS} per request (load more with "
            "conveyor feedback load)",
            field="records",
        )
    return records


def routes(context: AppContext) -> Contribution:
    project = context.project

    async def feedback(call: Call) -> Response:
        from conveyor.monitoring.feedback import record_feedback

        records = records_of(await call.body())
        done = await asyncio.to_thread(
            record_feedback, project, records, actor=call.actor, source="http"
        )
        body = done.to_dict()
        for unused in ("rejected", "reasons", "rejected_examples"):  # all or nothing here
            body.pop(unused)
        return Response(orjson.dumps(body), media_type="application/json")

    async def quarantine(call: Call) -> Response:
        from conveyor.monitoring.quality import quarantined

        query = call.request.query_params
        since, until = _range(query.get("since", "7d"), query.get("until"))
        limit = _int(query.get("limit", "1000"), "limit")
        found = await asyncio.to_thread(quarantined, project, since=since, until=until, limit=limit)
        return Response(orjson.dumps(found), media_type="application/json")

    async def quality(call: Call) -> Response:
        from conveyor.durations import parse_duration
        from conveyor.monitoring.quality import quality_report

        query = call.request.query_params
        model = _model(query.get("model"))
        since, until = _range(query.get("since", "7d"), query.get("until"))
        window_text = query.get("window")
        window = None if window_text is None else parse_duration(window_text, "window")
        metrics_text = query.get("metrics")
        metrics = None if not metrics_text else [m.strip() for m in metrics_text.split(",")]
        report = await asyncio.to_thread(
            quality_report,
            project,
            model,
            since=since,
            until=until,
            window=window,
            version=query.get("version"),
            metrics=metrics,
        )
        return Response(orjson.dumps(report.to_dict()), media_type="application/json")

    async def concept(call: Call) -> Response:
        from conveyor.durations import parse_duration
        from conveyor.monitoring.quality import concept_drift

        query = call.request.query_params
        model = _model(query.get("model"))
        window_text = query.get("window")
        judged = await asyncio.to_thread(
            concept_drift,
            project,
            model,
            window=None if window_text is None else parse_duration(window_text, "window"),
            metric=query.get("metric"),
            reference=query.get("reference"),
            version=query.get("version"),
        )
        return Response(orjson.dumps(judged.to_dict()), media_type="application/json")

    return Contribution(
        [
            Route(
                "POST",
                "/v1/feedback",
                feedback,
                "monitoring.feedback",
                "Ground truth for predictions: labels and business values, by request id "
                "or by entity key and time",
                body=_BODY,
                tags=("monitoring",),
                errors=(400, 422),
            ),
            Route(
                "GET",
                "/v1/feedback/quarantine",
                quarantine,
                "monitoring.read",
                "Feedback that joins no prediction, with the reason",
                query=(*_RANGE, _param("limit", "Records listed at most (default 1000).")),
                tags=("monitoring",),
                errors=(422,),
            ),
            Route(
                "GET",
                "/v1/monitor/quality",
                quality,
                "monitoring.read",
                "Model quality from feedback per version, arm and window",
                query=_QUALITY_QUERY,
                tags=("monitoring",),
                errors=(422,),
            ),
            Route(
                "GET",
                "/v1/monitor/concept-drift",
                concept,
                "monitoring.read",
                "Concept drift: a recent window's quality against the version's own, with an "
                "interval",
                query=_DRIFT_QUERY,
                tags=("monitoring",),
                errors=(422,),
            ),
        ]
    )


def _model(value: str | None) -> str:
    if not value:
        raise InvalidInputError("model is required: ?model=NAME", field="model")
    return value


def _int(text: str, field: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidInputError(f"{field} is a whole number, got {text!r}", field=field) from None
    if value < 1:
        raise InvalidInputError(f"{field} is 1 or more", field=field)
    return value


def _range(since_text: str, until_text: str | None) -> tuple[datetime, datetime]:
    from conveyor.monitoring.http import _moment

    now = datetime.now(UTC)
    since = _moment(since_text, "since", now)
    until = now if until_text is None else _moment(until_text, "until", now)
    return since, until
