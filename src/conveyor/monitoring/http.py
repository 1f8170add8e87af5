"""Monitoring's HTTP routes (role viewer).

``GET /v1/monitor/latency?model=fraud&since=1h&window=1m``: per model, version, arm and
window, requests and latency percentiles, as :meth:`MonitorQuery.latency` computes them
(the columnar copy plus the log's newest events). ``since`` and ``until`` are an age
(``1h``, ``7d``) or an ISO 8601 time; ``window`` a duration (default ``1m``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from starlette.responses import Response

from conveyor.durations import DURATION_FORMS, parse_duration, parse_moment
from conveyor.errors import InvalidInputError
from conveyor.web.app import Contribution
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["routes"]

_QUERY = tuple(
    {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": what,
    }
    for name, what in (
        ("model", "Only this model (default: every model)."),
        ("since", f"Start: an age ({DURATION_FORMS}) or an ISO 8601 time; default 1h."),
        ("until", "End (exclusive): an age or an ISO 8601 time; default now."),
        ("window", "Window length, e.g. 1m (default), 5m, 1h."),
    )
)


def routes(context: AppContext) -> Contribution:
    project = context.project

    async def latency(call: Call) -> Response:
        from conveyor.monitoring.query import MonitorQuery

        query = call.request.query_params
        now = datetime.now(UTC)
        since = _moment(query.get("since", "1h"), "since", now)
        until_text = query.get("until")
        until = now if until_text is None else _moment(until_text, "until", now)
        window = parse_duration(query.get("window", "1m"), "window")
        report = await asyncio.to_thread(
            MonitorQuery(project).latency,
            query.get("model"),
            since=since,
            until=until,
            window=window,
        )
        return Response(orjson.dumps(report.to_dict()), media_type="application/json")

    from conveyor.monitoring.alerts.http import chain
    from conveyor.monitoring.alerts.http import routes as alert_routes
    from conveyor.monitoring.monitor_http import routes as monitor_routes
    from conveyor.monitoring.monitor_http import sampler

    sampling = sampler(context)
    alerting = alert_routes(context)  # /v1/alerts, /v1/silences; the evaluation loop
    return Contribution(
        [
            Route(
                "GET",
                "/v1/monitor/latency",
                latency,
                "monitoring.read",
                "Requests and latency p50/p95/p99 per model, version, arm and window",
                query=_QUERY,
                tags=("monitoring",),
                errors=(422,),
            ),
            *_drift_routes(context),
            *_feedback_routes(context),  # feedback, quality, concept drift
            *monitor_routes(context),  # system, data, overview (monitoring.monitor_http)
            *_interop_routes(context),  # grafana.json, prometheus-rules
            *_shadow_routes(context),  # /v1/monitor/shadow/{model}
            *alerting.routes,
        ],
        # serving.sample every monitoring.system.sample_interval_s; alert evaluations
        startup=chain(sampling.start, alerting.startup),
        shutdown=chain(sampling.stop, alerting.shutdown),
    )


def _feedback_routes(context: AppContext) -> list[Route]:
    """``POST /v1/feedback`` and the quality routes (:mod:`conveyor.monitoring.feedback_http`)."""
    from conveyor.monitoring.feedback_http import routes as feedback_routes

    return list(feedback_routes(context).routes)


def _interop_routes(context: AppContext) -> list[Route]:
    """The generated dashboard and rule file (:mod:`conveyor.monitoring.interop.http`)."""
    from conveyor.monitoring.interop.http import routes as interop_routes

    return interop_routes(context)


def _drift_routes(context: AppContext) -> list[Route]:
    """``GET /v1/monitor/drift`` (:mod:`conveyor.monitoring.drift_http`)."""
    from conveyor.monitoring.drift_http import routes as drift_routes

    return list(drift_routes(context).routes)


def _shadow_routes(context: AppContext) -> list[Route]:
    """``GET /v1/monitor/shadow/{model}?version=N&window=1h&top=10``: the shadow analysis
    (:func:`conveyor.monitoring.shadow_analysis.shadow_analysis`), computed on request."""
    project = context.project

    async def shadow(call: Call) -> Response:
        from conveyor.monitoring.shadow_analysis import shadow_analysis

        query = call.request.query_params
        now = datetime.now(UTC)
        window = parse_duration(query.get("window", "1h"), "window")
        top = _integer(query.get("top", "10"), "top")
        version = query.get("version")
        analysis = await asyncio.to_thread(
            shadow_analysis,
            project,
            call.params["model"],
            version,
            since=now - window,
            until=now,
            top=top,
            **{
                name: _number(query[name], name)
                for name in ("min_agreement", "max_error_rate", "max_latency_ratio")
                if name in query
            },
        )
        return Response(orjson.dumps(analysis.to_dict()), media_type="application/json")

    query = tuple(
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": what,
        }
        for name, what in (
            ("version", "Only this shadow version (default: every one)."),
            ("window", "How far back from now, e.g. 1h (default), 15m, 1d."),
            ("top", "Largest disagreements listed per version (default 10)."),
            ("min_agreement", "Agreement rate a shadow version needs (default 0.95)."),
            ("max_error_rate", "Share of failed shadow copies allowed (default 0.01)."),
            ("max_latency_ratio", "Shadow p95 allowed, times the primary's (default 1.5)."),
        )
    )
    return [
        Route(
            "GET",
            "/v1/monitor/shadow/{model}",
            shadow,
            "monitoring.read",
            "Shadow versions against the answers given: agreement, differences, latency, "
            "errors, largest disagreements",
            query=query,
            tags=("monitoring",),
            errors=(422,),
        )
    ]


def _number(text: str, field: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"{field} must be a number, got {text!r}", field=field) from None


def _integer(text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidInputError(f"{field} must be an integer, got {text!r}", field=field) from None


def _moment(text: str, field: str, now: datetime) -> datetime:
    """An age (a duration ago) or an ISO 8601 time (naive: UTC)."""
    return parse_moment(text, now, option=field)
