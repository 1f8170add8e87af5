"""``GET /v1/monitor/grafana.json`` and ``GET /v1/monitor/prometheus-rules`` (role viewer):
the dashboard and the rule file ``conveyor monitor grafana`` and ``conveyor monitor
prometheus-rules`` print, generated from the server's spec; ``GET /v1/monitor/metrics``:
the event-log monitors for Prometheus to scrape (:mod:`conveyor.monitoring.interop.exporter`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.responses import Response

from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.web.app import AppContext
    from conveyor.web.pipeline import Call

__all__ = ["routes"]

_EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"


def routes(context: AppContext) -> list[Route]:
    from conveyor.monitoring.interop.exporter import Exporter
    from conveyor.monitoring.interop.settings import interop_of

    spec = context.project.spec
    exporter = Exporter(context.project, interop_of(spec).export_interval_s)

    async def monitors(call: Call) -> Response:
        return Response(await exporter.text(), media_type=_EXPOSITION)

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
            "/v1/monitor/metrics",
            monitors,
            "monitoring.read",
            "The event-log monitors the alert rules watch (quality, drift, CBPE, data), in "
            "Prometheus' exposition format",
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
