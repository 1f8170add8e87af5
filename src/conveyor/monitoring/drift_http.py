"""``GET /v1/monitor/drift?model=fraud&since=1d``: a live drift check, computed on the fly
and recorded nowhere (role viewer, ``monitoring.read``; ``conveyor monitor drift`` and the
scheduled ``monitoring.drift`` record theirs).

Query: ``model`` (required), ``since`` (default ``1d``) and ``until`` (an age or an ISO
8601 time), ``version``, ``reference_since`` and ``reference_until`` (a pinned window
instead of the training data), ``max_rows`` (default 200,000 here: the server's own
process does the work). The answer is
:meth:`~conveyor.monitoring.drift_live.LiveDrift.to_dict`.

``recorded=true`` computes nothing: the latest check recorded for the model (by the
scheduled job or the CLI), its ``monitoring.drift_checked`` payload with its time and
the saved report; 404 (``reason: no_check``) when there is none. What a dashboard polls.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError
from conveyor.web.app import Contribution
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["HTTP_MAX_ROWS", "routes"]

#: Live rows a check computed by the server compares at most (a seeded sample beyond).
HTTP_MAX_ROWS = 200_000

_QUERY = tuple(
    {
        "name": name,
        "in": "query",
        "required": name == "model",
        "schema": {"type": "string"},
        "description": what,
    }
    for name, what in (
        ("model", "The model whose sampled live traffic to check."),
        ("since", "Start: an age (1h, 1d) or an ISO 8601 time; default 1d."),
        ("until", "End (exclusive): an age or an ISO 8601 time; default now."),
        ("version", "The version (default: the champion, else the busiest in the range)."),
        ("reference_since", "With reference_until: a pinned window of traffic as reference."),
        ("reference_until", "End of the pinned reference window."),
        ("max_rows", "Live rows compared at most (default 200000)."),
        ("recorded", "true: the latest recorded check instead of computing one."),
    )
)


def routes(context: AppContext) -> Contribution:
    project = context.project

    async def drift(call: Call) -> Response:
        from conveyor.monitoring.drift_live import live_drift
        from conveyor.monitoring.http import _moment

        query = call.request.query_params
        model = query.get("model")
        if not model:
            raise InvalidInputError("model is required: ?model=NAME", field="model")
        flag = query.get("recorded", "false").lower()
        if flag not in ("true", "false"):
            raise InvalidInputError(
                f"recorded must be true or false, got {flag!r}", field="recorded"
            )
        if flag == "true":
            latest = await asyncio.to_thread(_latest, project, model)
            return Response(orjson.dumps(latest), media_type="application/json")
        now = datetime.now(UTC)
        since = _moment(query.get("since", "1d"), "since", now)
        until_text = query.get("until")
        until = now if until_text is None else _moment(until_text, "until", now)
        pinned = None
        ref_since, ref_until = query.get("reference_since"), query.get("reference_until")
        if (ref_since is None) != (ref_until is None):
            raise InvalidInputError(
                "give both reference_since and reference_until, or neither",
                field="reference_since",
            )
        if ref_since is not None and ref_until is not None:
            pinned = (
                _moment(ref_since, "reference_since", now),
                _moment(ref_until, "reference_until", now),
            )
        text = query.get("max_rows")
        try:
            max_rows = HTTP_MAX_ROWS if text is None else int(text)
        except ValueError:
            raise InvalidInputError(
                f"max_rows must be an integer, got {text!r}", field="max_rows"
            ) from None
        found = await asyncio.to_thread(
            live_drift,
            project,
            model,
            since=since,
            until=until,
            version=query.get("version"),
            reference_window=pinned,
            max_rows=max_rows,
            record=False,
        )
        return Response(orjson.dumps(found.to_dict()), media_type="application/json")

    return Contribution(
        [
            Route(
                "GET",
                "/v1/monitor/drift",
                drift,
                "monitoring.read",
                "Drift of a model's sampled live inputs and predictions against its training "
                "data (or a pinned window), with a label-free accuracy estimate (CBPE)",
                query=_QUERY,
                tags=("monitoring",),
                errors=(404, 422),
            )
        ]
    )


def _latest(project: Any, model: str) -> dict[str, Any]:
    """The latest recorded check of ``model`` and its report."""
    from conveyor.checks.persist import get_report
    from conveyor.errors import NotFoundError
    from conveyor.monitoring.drift_live import DRIFT_CHECKED

    found = project.events.query(kind=DRIFT_CHECKED.name, subject=model, limit=1, descending=True)
    if not found.items:
        raise NotFoundError(
            f"no drift check of model {model!r} was recorded (monitoring.drift.cron, or "
            "conveyor monitor drift)",
            model=model,
            reason="no_check",
        )
    event = found.items[0]
    report = get_report(project.store, str(event.payload["report_id"]))
    return {
        "model": model,
        "version": event.subject_version,
        "time": event.time.isoformat(),
        "actor": event.actor,
        **event.payload,
        "report": report.to_dict(),
    }
