"""``GET /v1/monitor/drift?model=fraud&since=1d``: a live drift check, computed on the fly
and recorded nowhere (role viewer, ``monitoring.read``; ``conveyor monitor drift`` and the
scheduled ``monitoring.drift`` record theirs).

Query: ``model`` (required), ``since`` (default ``1d``) and ``until`` (an age or an ISO
8601 time), ``version``, ``reference_since`` and ``reference_until`` (a pinned window
instead of the training data), ``max_rows``. The answer is
:meth:`~conveyor.monitoring.drift_live.LiveDrift.to_dict`.
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
        ("max_rows", "Live rows compared at most (default 1000000)."),
    )
)


def routes(context: AppContext) -> Contribution:
    project = context.project

    async def drift(call: Call) -> Response:
        from conveyor.monitoring.drift_live import DEFAULT_MAX_ROWS, live_drift
        from conveyor.monitoring.http import _moment

        query = call.request.query_params
        model = query.get("model")
        if not model:
            raise InvalidInputError("model is required: ?model=NAME", field="model")
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
            max_rows = DEFAULT_MAX_ROWS if text is None else int(text)
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
