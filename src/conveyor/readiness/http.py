"""``GET /v1/readiness``: the production readiness report (role viewer), made, saved and
answered as :meth:`~conveyor.readiness.report.ReadinessReport.to_dict`.

``?recorded=true`` measures nothing: the newest saved report (404 when none was made),
what a dashboard shows. ``?load_test=true`` also runs the built-in load test against the server
(``readiness.load_test.url``, by default this server's own address as the request
reached it), which needs the
role deployer (``readiness.load_test``); it calls the server with the caller's own key.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import orjson
from starlette.responses import Response

from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.web.app import Contribution
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["routes"]


def routes(context: AppContext) -> Contribution:
    project = context.project

    async def readiness(call: Call) -> Response:
        from conveyor.readiness.report import latest_readiness, readiness_report

        query = call.request.query_params
        if _flag(query.get("recorded", "false"), "recorded"):
            latest = await asyncio.to_thread(latest_readiness, project)
            if latest is None:
                raise NotFoundError(
                    "no readiness report was made yet: GET /v1/readiness makes one",
                    kind="readiness report",
                    id=f"project:{project.name}",
                )
            return Response(orjson.dumps(latest.to_dict()), media_type="application/json")
        load_test = _flag(query.get("load_test", "false"), "load_test")
        caller = call.caller
        if load_test and caller is not None and caller.key is not None:
            caller.key.require("readiness.load_test")
        made = await asyncio.to_thread(
            readiness_report,
            project,
            load_test=load_test,
            token=call.token,
            actor=None if caller is None else caller.actor,
            server_url=str(call.request.base_url),  # unless readiness.load_test.url is set
        )
        return Response(orjson.dumps(made.to_dict()), media_type="application/json")

    return Contribution(
        [
            Route(
                "GET",
                "/v1/readiness",
                readiness,
                "readiness.read",
                "The production readiness report against the spec's success criteria "
                "(saved; load_test=true needs the role deployer)",
                query=(
                    {
                        "name": "load_test",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean"},
                        "description": "Also run the built-in load test (role deployer).",
                    },
                    {
                        "name": "recorded",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean"},
                        "description": "true: the newest saved report, measuring nothing.",
                    },
                ),
                tags=("readiness",),
                errors=(404, 422),
            )
        ]
    )


def _flag(text: str, field: str) -> bool:
    value = text.lower()
    if value not in ("true", "false"):
        raise InvalidInputError(f"{field} must be true or false, got {text!r}", field=field)
    return value == "true"
