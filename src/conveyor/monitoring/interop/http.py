"""``GET /v1/monitor/grafana.json`` and ``GET /v1/monitor/prometheus-rules`` (role viewer):
the dashboard and the rule file ``conveyor monitor grafana`` and ``conveyor monitor
prometheus-rules`` print, generated from the server's spec."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.responses import Response

from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["routes"]


def routes(context: AppContext) -> list[Route]:
    spec = context.project.spec

    async def grafana(call: Call) -> Response:
        from conveyor.monitoring.interop.grafana import dashboard

        return Response(orjson.dumps(dashboard(spec)), media_type="application/json")

    async def prometheus_rules(call: Call) -> Response:
        from conveyor.monitoring.interop.prometheus import rules_yaml

        return Response(rules_yaml(spec), media_type="application/yaml")

    tags = ("monitoring",)
    return [
        Route(
            "GET",
            "/v1/monitor/grafana.json",
            grafana,
            "monitoring.read",
            "A Grafana dashboard of the serving monitors, generated from the spec",
            tags=tags,
        ),
        Route(
            "GET",
            "/v1/monitor/prometheus-rules",
            prometheus_rules,
            "monitoring.read",
            "Prometheus recording and alerting rules generated from the spec (YAML)",
            tags=tags,
        ),
    ]
