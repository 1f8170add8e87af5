"""One table: each monitor's name, and the Prometheus expression that computes it.

Conveyor's monitors (:data:`conveyor.monitoring.system_query.METRICS`, what the alert
rules of :mod:`conveyor.monitoring.alerts` read) and the Prometheus side (the recording
rules, the alerting rules and the Grafana panels this package generates) use the same
names: ``latency_p95_ms`` is the system monitor's p95 over a range, the metric of an alert
rule, and the recording rule ``conveyor:latency_p95_ms:5m``. The expressions read the series the
model server exposes on ``GET /metrics`` (:mod:`conveyor.serving.metrics`,
:mod:`conveyor.web.metrics`):

============================  ==================================================================
monitor                       from the series
============================  ==================================================================
``requests_per_s``            ``conveyor_requests_total`` (every answer: ``status`` is ``ok`` or
                              the HTTP status of the error), rate
``latency_p50_ms`` (p95, p99) ``conveyor_request_seconds`` histogram (answered requests), x 1000
``error_rate``                ``conveyor_requests_total{status!="ok"}`` share (4xx and 5xx)
``server_error_rate``         ``conveyor_requests_total{status=~"5.."}`` share
``availability``              1 - ``server_error_rate``
``shed_rate``                 ``conveyor_shed_requests_total`` (503 overloaded) share
``cache_hit_ratio``           ``conveyor_cache_lookups_total{result="hit"}`` share of lookups
``mean_batch_rows``           ``conveyor_batch_rows`` histogram: sum / count
``queue_depth``               ``conveyor_queue_rows`` (rows waiting), summed over workers
``route_degraded``            ``conveyor_route_degraded`` (1: a worker cannot load its route)
``cpu_percent``               ``conveyor_process_cpu_seconds_total`` rate x 100 (per instance)
``rss_mib``                   ``conveyor_process_resident_memory_bytes`` / 2^20 (per instance)
============================  ==================================================================

Monitors computed from the event log (``quality.*``, ``drift.share``,
``prediction_drift``, ``cbpe.*``, ``data.*``) have no series on the server's ``/metrics``:
Conveyor exports the values it computes for its alert rules on ``GET /v1/monitor/metrics``
as ``conveyor_monitor{monitor="drift.share",model="fraud",window="1h"}``
(:mod:`conveyor.monitoring.interop.exporter`), and the generated rules read those.

A share whose numerator has no series yet (no errors so far) is 0, not "no data": the
numerator is ``or``-ed with zero times the denominator, so an availability alert sees 1.0
and a dashboard draws a flat line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MONITORS",
    "PromMonitor",
    "expression",
    "matchers",
    "prom_duration",
    "record_name",
]


@dataclass(frozen=True, slots=True)
class PromMonitor:
    """A monitor Prometheus can compute from the server's series."""

    name: str
    title: str
    unit: str
    """Grafana's unit id (``ms``, ``percentunit``, ``reqps``...)."""
    per_model: bool
    """Whether the series carry ``model`` (the process ones are per instance)."""
    build: Callable[[str, str, str], str]
    """``build(matchers, window, by)``: the expression, grouped ``by`` those labels."""
    description: str


def _join(*parts: str) -> str:
    return ",".join(p for p in parts if p)


def _series(metric: str, sel: str) -> str:
    return f"{metric}{{{sel}}}" if sel else metric


def _rate(metric: str, sel: str, window: str, by: str) -> str:
    return f"sum by ({by}) (rate({_series(metric, sel)}[{window}]))"


def _share(metric: str, part: str, sel: str, window: str, by: str) -> str:
    total = _rate(metric, sel, window, by)
    some = _rate(metric, _join(part, sel), window, by)
    return f"({some} or 0 * {total}) / {total}"


def _quantile(q: float) -> Callable[[str, str, str], str]:
    def build(sel: str, window: str, by: str) -> str:
        labels = ", ".join(p for p in (by, "le") if p)
        return (
            f"1000 * histogram_quantile({q}, sum by ({labels}) "
            f"(rate({_series('conveyor_request_seconds_bucket', sel)}[{window}])))"
        )

    return build


def _server_errors(sel: str, window: str, by: str) -> str:
    return _share("conveyor_requests_total", 'status=~"5.."', sel, window, by)


MONITORS: dict[str, PromMonitor] = {
    m.name: m
    for m in (
        PromMonitor(
            "requests_per_s",
            "Requests per second",
            "reqps",
            True,
            lambda s, w, by: _rate("conveyor_requests_total", s, w, by),
            "prediction requests answered per second, errors included",
        ),
        PromMonitor(
            "latency_p50_ms",
            "Latency p50",
            "ms",
            True,
            _quantile(0.5),
            "median time to answer a prediction request (answered requests)",
        ),
        PromMonitor(
            "latency_p95_ms",
            "Latency p95",
            "ms",
            True,
            _quantile(0.95),
            "95th percentile of the time to answer a prediction request",
        ),
        PromMonitor(
            "latency_p99_ms",
            "Latency p99",
            "ms",
            True,
            _quantile(0.99),
            "99th percentile of the time to answer a prediction request",
        ),
        PromMonitor(
            "error_rate",
            "Error rate (4xx + 5xx)",
            "percentunit",
            True,
            lambda s, w, by: _share("conveyor_requests_total", 'status!="ok"', s, w, by),
            "share of prediction requests answered with an error",
        ),
        PromMonitor(
            "server_error_rate",
            "Server error rate (5xx)",
            "percentunit",
            True,
            _server_errors,
            "share of prediction requests answered with a 5xx",
        ),
        PromMonitor(
            "availability",
            "Availability",
            "percentunit",
            True,
            lambda s, w, by: f"1 - ({_server_errors(s, w, by)})",
            "share of prediction requests not answered with a 5xx",
        ),
        PromMonitor(
            "shed_rate",
            "Shed load",
            "percentunit",
            True,
            lambda s, w, by: (
                f"({_rate('conveyor_shed_requests_total', s, w, by)} or 0 * "
                f"{_rate('conveyor_requests_total', s, w, by)}) / "
                f"{_rate('conveyor_requests_total', s, w, by)}"
            ),
            "share of prediction requests refused because a batch queue was full",
        ),
        PromMonitor(
            "cache_hit_ratio",
            "Cache hit ratio",
            "percentunit",
            True,
            lambda s, w, by: _share("conveyor_cache_lookups_total", 'result="hit"', s, w, by),
            "share of prediction cache lookups that hit",
        ),
        PromMonitor(
            "mean_batch_rows",
            "Rows per model call",
            "short",
            True,
            lambda s, w, by: (
                f"{_rate('conveyor_batch_rows_sum', s, w, by)} / "
                f"{_rate('conveyor_batch_rows_count', s, w, by)}"
            ),
            "mean rows per model call (batching)",
        ),
        PromMonitor(
            "queue_depth",
            "Rows waiting",
            "short",
            True,
            lambda s, w, by: (
                f"sum by ({by}) (max_over_time({_series('conveyor_queue_rows', s)}[{w}]))"
            ),
            "rows waiting in the batch queues (the window's highest, summed over workers)",
        ),
        PromMonitor(
            "route_degraded",
            "Route degraded",
            "short",
            True,
            lambda s, w, by: (
                f"max by ({by}) (max_over_time({_series('conveyor_route_degraded', s)}[{w}]))"
            ),
            "1 while a worker cannot load its model's live route revision",
        ),
        PromMonitor(
            "cpu_percent",
            "CPU",
            "percent",
            False,
            lambda s, w, by: f"100 * {_rate('conveyor_process_cpu_seconds_total', s, w, by)}",
            "CPU time of the serving processes (100 = one core busy)",
        ),
        PromMonitor(
            "rss_mib",
            "Memory (RSS)",
            "mbytes",
            False,
            lambda s, w, by: (
                f"sum by ({by}) ({_series('conveyor_process_resident_memory_bytes', s)}) / 1048576"
            ),
            "resident memory of the serving processes, MiB",
        ),
    )
}


def matchers(*parts: str) -> str:
    """Label matchers joined for a selector's braces (empty parts dropped)."""
    return _join(*parts)


def expression(name: str, window: str, *, sel: str = "", by: str | None = None) -> str:
    """The PromQL of monitor ``name`` over ``window`` (``5m``), series limited by ``sel``
    (``job="conveyor"``) and grouped ``by`` (default: ``model``, or ``instance`` for the
    process monitors; ``""``: all traffic as one series). KeyError for a monitor Prometheus
    cannot compute."""
    monitor = MONITORS[name]
    group = by if by is not None else ("model" if monitor.per_model else "instance")
    return monitor.build(sel, window, group)


def record_name(name: str, window: str) -> str:
    """The recording rule of monitor ``name`` over ``window``: ``conveyor:latency_p95_ms:5m``."""
    return f"conveyor:{name}:{window}"


_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_PROM_DURATION = re.compile(r"^(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?$")


def prom_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (``300`` -> ``5m``, ``5400`` -> ``1h30m``); whole
    seconds, at least 1 s."""
    left = max(1, round(seconds))
    out = []
    for unit, size in _UNITS:
        if left >= size:
            out.append(f"{left // size}{unit}")
            left %= size
    return "".join(out)
