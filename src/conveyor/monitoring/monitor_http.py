"""The system, data-quality and overview monitors over HTTP (role viewer), and the
worker's sampler.

::

    GET /v1/monitor/system?model=fraud&since=1h&window=1m    MonitorQuery.system
    GET /v1/monitor/data?dataset=tx&since=24h&window=1h      MonitorQuery.data_quality
    GET /v1/monitor/overview?since=15m                       one window: every model's
                                                             system monitors, every data
                                                             set's quality, each worker

``since`` and ``until`` are an age (``1h``, ``7d``) or an ISO 8601 time; ``window`` a
duration. Answers are the reports' JSON documents (``to_dict``); a bad parameter is a
422 ``invalid_input`` naming it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from conveyor.durations import DURATION_FORMS, parse_duration
from conveyor.errors import InvalidInputError
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from starlette.datastructures import QueryParams

    from conveyor.monitoring.system import Sampler
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["routes", "sampler"]


def _param(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": what,
    }


def _range(default_since: str, default_window: str) -> tuple[dict[str, Any], ...]:
    return (
        _param(
            "since",
            f"Start: an age ({DURATION_FORMS}) or an ISO 8601 time; default {default_since}.",
        ),
        _param("until", "End (exclusive): an age or an ISO 8601 time; default now."),
        _param("window", f"Window length, e.g. 1m, 5m, 1h (default {default_window})."),
    )


def sampler(context: AppContext) -> Sampler:
    """This worker's sampler (``serving.sample`` every ``monitoring.system.
    sample_interval_s``), reading the model server's state when it has one."""
    from conveyor.monitoring.system import Sampler, system_of

    return Sampler(context.project, context.state, system_of(context.project).sample_interval_s)


def routes(context: AppContext) -> list[Route]:
    """The monitor routes (the capability's :func:`conveyor.monitoring.http.routes` adds
    them to its contribution)."""
    project = context.project

    async def system(call: Call) -> Response:
        from conveyor.monitoring.query import MonitorQuery

        query = call.request.query_params
        since, until, window = _window(query, "1h", "1m")
        report = await asyncio.to_thread(
            MonitorQuery(project).system,
            _text(query, "model"),
            since=since,
            until=until,
            window=window,
        )
        return _json(report.to_dict())

    async def data(call: Call) -> Response:
        from conveyor.monitoring.query import MonitorQuery

        query = call.request.query_params
        since, until, window = _window(query, "24h", "1h")
        report = await asyncio.to_thread(
            MonitorQuery(project).data_quality,
            _text(query, "dataset"),
            since=since,
            until=until,
            window=window,
        )
        return _json(report.to_dict())

    async def overview(call: Call) -> Response:
        query = call.request.query_params
        since, until, _ = _window(query, "15m", "1m")
        body = await asyncio.to_thread(overview_of, project, since, until)
        return _json(body)

    tags = ("monitoring",)
    return [
        Route(
            "GET",
            "/v1/monitor/system",
            system,
            "monitoring.read",
            "System monitors per model, version, arm and window: request rate, latency, "
            "4xx/5xx rates, shed load, cache hits, batch sizes, queue depth, CPU and memory",
            query=(_param("model", "Only this model (default: every model)."), *_range("1h", "1m")),
            tags=tags,
            errors=(422,),
        ),
        Route(
            "GET",
            "/v1/monitor/data",
            data,
            "monitoring.read",
            "Data-quality monitors per data set and window: null, out-of-range and "
            "quarantine rates, schema changes, freshness",
            query=(
                _param("dataset", "Only this data set (default: every data set)."),
                *_range("24h", "1h"),
            ),
            tags=tags,
            errors=(422,),
        ),
        Route(
            "GET",
            "/v1/monitor/overview",
            overview,
            "monitoring.read",
            "Every model's system monitors and every data set's quality over one window, "
            "and each server worker's latest sample",
            query=_range("15m", "the whole range")[:2],
            tags=tags,
            errors=(422,),
        ),
    ]


def overview_of(project: Any, since: datetime, until: datetime) -> dict[str, Any]:
    """``since`` to ``until`` as one window: per model, version and arm the system
    monitors; per data set its quality; per worker process its latest sample."""
    import time

    from conveyor.monitoring.data_quality import _covering
    from conveyor.monitoring.query import MonitorQuery

    started = time.perf_counter()
    monitor = MonitorQuery(project)
    window = _covering(since, until)
    system = monitor.system(since=since, until=until, window=window)
    data = monitor.data_quality(since=since, until=until, window=window)
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for p in system.processes:
        latest[(p["host"], p["pid"])] = p
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "models": [{k: v for k, v in w.items() if k != "window"} for w in system.windows],
        "datasets": [{k: v for k, v in w.items() if k != "window"} for w in data.windows],
        "processes": [{k: v for k, v in p.items() if k != "window"} for p in latest.values()],
        "seconds": round(time.perf_counter() - started, 4),
        "notes": [*system.notes, *data.notes],
    }


def _text(query: QueryParams, name: str) -> str | None:
    value = query.get(name)
    if value is not None and not value.strip():
        raise InvalidInputError(f"{name} is empty", field=name)
    return value


def _window(
    query: QueryParams, default_since: str, default_window: str
) -> tuple[datetime, datetime, timedelta]:
    from conveyor.monitoring.http import _moment

    now = datetime.now(UTC)
    since = _moment(query.get("since", default_since), "since", now)
    until_text = query.get("until")
    until = now if until_text is None else _moment(until_text, "until", now)
    if until <= since:
        raise InvalidInputError(
            f"until ({until.isoformat()}) must come after since ({since.isoformat()})",
            field="until",
        )
    window = parse_duration(query.get("window", default_window), "window")
    if window < timedelta(seconds=1):
        raise InvalidInputError(f"window must be a second or longer, got {window}", field="window")
    return since, until, window


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body, default=str), media_type="application/json")
