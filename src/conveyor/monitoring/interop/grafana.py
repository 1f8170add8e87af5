"""A Grafana dashboard generated from the spec, over the server's Prometheus series.

::

    from conveyor.monitoring.interop.grafana import dashboard

    board = dashboard(project.spec)        # a dict: json.dump it, import it in Grafana

Rows of time series panels per model, version and arm (the ``model`` variable selects the
models; every model by default): traffic and errors, latency, batching and cache, the
serving processes. The expressions are those of :mod:`conveyor.monitoring.interop.names`
with Grafana's ``$__rate_interval`` as the window, and the data source is the dashboard's
``datasource`` variable (type prometheus). A panel whose monitor has an alert rule or an
SLO draws its threshold as a line. Monitors computed from the event log only (quality,
drift, data) are drawn from ``conveyor_monitor``, which a server exports on
``GET /v1/monitor/metrics`` (:mod:`conveyor.monitoring.interop.exporter`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.monitoring.interop.exporter import EXPORTED
from conveyor.monitoring.interop.names import MONITORS, expression, matchers
from conveyor.monitoring.interop.settings import interop_of

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["SCHEMA_VERSION", "dashboard"]

#: The dashboard JSON model's version the generated board follows (Grafana 10.4 / 11).
SCHEMA_VERSION = 39

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_UID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_WINDOW = "$__rate_interval"
_MODEL = 'model=~"$model"'
_PER_VERSION = "model, version, arm"
_VERSION_LEGEND = "{{model}} v{{version}} {{arm}}"

# (row title, [(panel title, [(monitor, grouped by, legend)], width of 24)]); a panel's unit
# is its first monitor's.
_ROWS: tuple[tuple[str, tuple[tuple[str, tuple[tuple[str, str, str], ...], int], ...]], ...] = (
    (
        "Traffic and errors",
        (
            ("Requests per second", (("requests_per_s", _PER_VERSION, _VERSION_LEGEND),), 6),
            (
                "Errors",
                (
                    ("error_rate", "model", "{{model}} 4xx+5xx"),
                    ("server_error_rate", "model", "{{model}} 5xx"),
                ),
                6,
            ),
            ("Availability", (("availability", "model", "{{model}}"),), 6),
            ("Route degraded", (("route_degraded", "model", "{{model}}"),), 6),
        ),
    ),
    (
        "Latency",
        (
            (
                "Latency p50 / p95 / p99",
                (
                    ("latency_p50_ms", "model", "{{model}} p50"),
                    ("latency_p95_ms", "model", "{{model}} p95"),
                    ("latency_p99_ms", "model", "{{model}} p99"),
                ),
                12,
            ),
            (
                "Latency p95 by version and arm",
                (("latency_p95_ms", _PER_VERSION, _VERSION_LEGEND),),
                12,
            ),
        ),
    ),
    (
        "Batching, cache and load",
        (
            (
                "Rows per model call",
                (("mean_batch_rows", "model, version", "{{model}} v{{version}}"),),
                6,
            ),
            (
                "Cache hit ratio",
                (("cache_hit_ratio", "model, version", "{{model}} v{{version}}"),),
                6,
            ),
            ("Rows waiting", (("queue_depth", "model, version", "{{model}} v{{version}}"),), 6),
            ("Shed load", (("shed_rate", "model", "{{model}}"),), 6),
        ),
    ),
    (
        "Serving processes",
        (
            ("CPU (100 = one core)", (("cpu_percent", "instance", "{{instance}}"),), 12),
            ("Memory (RSS)", (("rss_mib", "instance, pid", "{{instance}} pid {{pid}}"),), 12),
        ),
    ),
)

_EVENT_LOG_ONLY = """\
Model quality (from feedback), drift of live inputs and predictions, CBPE estimates and
data-quality monitors are computed from Conveyor's event log. A server exports the values
its alert rules watch on `GET /v1/monitor/metrics` (scrape it with a viewer key as bearer
token). Everything else: `conveyor monitor quality MODEL`, `conveyor monitor drift MODEL`,
`conveyor alerts list`, and the JSON endpoints under `/v1/monitor/`."""


def dashboard(
    spec: ProjectSpec, rules: Sequence[Any] | None = None, *, uid: str | None = None
) -> dict[str, Any]:
    """The dashboard JSON model for ``spec``. ``rules`` (Conveyor's alert rules, default
    :func:`~conveyor.monitoring.alerts.rules.derive_rules` when it is available) give the
    panels their threshold lines."""
    if uid is not None and not _UID.fullmatch(uid):
        from conveyor.errors import InvalidInputError

        raise InvalidInputError(
            f"uid {uid!r}: Grafana takes 1 to 40 letters, digits, '-' and '_'", field="uid"
        )
    settings = interop_of(spec)
    project = str(getattr(spec, "project", "conveyor"))
    if rules is None:
        from conveyor.monitoring.interop.prometheus import conveyor_rules

        rules = conveyor_rules(spec)
    thresholds = _thresholds(spec, rules)
    sel = matchers(settings.matchers, _MODEL)
    panels: list[dict[str, Any]] = []
    ids = iter(range(1, 1000))
    y = 0
    for row_title, row_panels in _ROWS:
        panels.append(_row(next(ids), row_title, y))
        y += 1
        x = 0
        for title, targets, width in row_panels:
            if x + width > 24:
                x, y = 0, y + 8
            panel_sel = (
                matchers(settings.matchers) if not MONITORS[targets[0][0]].per_model else sel
            )
            panels.append(
                _timeseries(
                    next(ids),
                    title,
                    [
                        (expression(m, _WINDOW, sel=panel_sel, by=by), legend)
                        for m, by, legend in targets
                    ],
                    unit=MONITORS[targets[0][0]].unit,
                    grid={"h": 8, "w": width, "x": x, "y": y},
                    threshold=_first(thresholds, [m for m, _, _ in targets]),
                    description="; ".join(
                        dict.fromkeys(f"{m}: {MONITORS[m].description}" for m, _, _ in targets)
                    ),
                )
            )
            x += width
        y += 8
    panels.append(_row(next(ids), "Quality, drift and data", y))
    panels.append(
        _timeseries(
            next(ids),
            "Event-log monitors (exported by Conveyor)",
            [
                (
                    f'{EXPORTED}{{model=~"$model"}}',
                    "{{monitor}} {{model}} over {{window}}",
                )
            ],
            unit="short",
            grid={"h": 8, "w": 16, "x": 0, "y": y + 1},
            threshold=None,
            description="quality.*, drift.share, prediction_drift, cbpe.*, data.*: the values "
            "Conveyor computes from its event log for its alert rules (GET /v1/monitor/metrics)",
        )
    )
    panels.append(
        {
            "id": next(ids),
            "type": "text",
            "title": "Where these come from",
            "gridPos": {"h": 8, "w": 8, "x": 16, "y": y + 1},
            "fieldConfig": {"defaults": {}, "overrides": []},  # required of every panel
            "options": {"mode": "markdown", "content": _EVENT_LOG_ONLY},
        }
    )
    series = matchers(settings.matchers)
    requests = f"conveyor_requests_total{{{series}}}" if series else "conveyor_requests_total"
    label_query = f"label_values({requests}, model)"
    models = sorted(getattr(spec, "models", None) or {})
    return {
        "uid": uid or _uid(project),
        "title": f"Conveyor: {project}",
        "description": "Generated by `conveyor monitor grafana` from conveyor.yaml "
        "(monitor names as in Conveyor's own monitors).",
        "tags": ["conveyor", "mlops"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        # The generated alerts, while they fire, marked on every panel.
        "annotations": {
            "list": [
                {
                    "name": "Alerts firing",
                    "datasource": dict(_DATASOURCE),
                    "enable": True,
                    "iconColor": "red",
                    "expr": 'ALERTS{alertstate="firing", model=~"$model"}',
                }
            ]
        },
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": settings.datasource, "value": settings.datasource},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                },
                {
                    "name": "model",
                    "label": "Model",
                    "type": "query",
                    "datasource": dict(_DATASOURCE),
                    "query": {
                        "query": label_query,
                        "refId": "PrometheusVariableQueryEditor-VariableQuery",
                    },
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "current": {"text": ["All"], "value": ["$__all"]},
                    "refresh": 2,
                    "sort": 1,
                    "hide": 0,
                    "regex": "",
                    "options": [],
                    "description": "Models of the spec: " + (", ".join(models) or "none yet"),
                },
            ]
        },
        "panels": panels,
    }


def _row(panel_id: int, title: str, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }


def _timeseries(
    panel_id: int,
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str,
    grid: dict[str, int],
    threshold: tuple[str, float] | None,
    description: str,
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "spanNulls": False,
    }
    if threshold is not None:
        op, value = threshold
        # Red on the side of the threshold where the alert fires.
        steps = (
            [{"color": "green", "value": None}, {"color": "red", "value": value}]
            if op == ">"
            else [{"color": "red", "value": None}, {"color": "green", "value": value}]
        )
        custom["thresholdsStyle"] = {"mode": "line"}
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": dict(_DATASOURCE),
        "gridPos": grid,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": custom,
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": {
            "legend": {
                "showLegend": True,
                "displayMode": "list",
                "placement": "bottom",
                "calcs": [],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": dict(_DATASOURCE),
                "expr": expr,
                "legendFormat": legend,
                "range": True,
                "editorMode": "code",
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _thresholds(spec: ProjectSpec, rules: Sequence[Any]) -> dict[str, tuple[str, float]]:
    """Per monitor, the threshold to draw: the first alert rule's on it, else its SLO."""
    found: dict[str, tuple[str, float]] = {}
    for rule in rules:
        found.setdefault(str(rule.metric), (str(rule.op), float(rule.threshold)))
    slos = getattr(spec, "slos", None)
    if slos is not None:
        if slos.latency_p95_ms is not None:
            found.setdefault("latency_p95_ms", (">", float(slos.latency_p95_ms)))
        if slos.availability is not None:
            found.setdefault("availability", ("<", float(slos.availability)))
        if slos.throughput_rps is not None:  # the rate the service must carry
            found.setdefault("requests_per_s", ("<", float(slos.throughput_rps)))
    return found


def _first(found: dict[str, tuple[str, float]], names: list[str]) -> tuple[str, float] | None:
    for name in names:
        if name in found:
            return found[name]
    return None


def _uid(project: str) -> str:
    # Grafana's uid: at most 40 characters of letters, digits, '-' and '_'.
    return ("conveyor-" + re.sub(r"[^A-Za-z0-9_-]", "-", project))[:40]
