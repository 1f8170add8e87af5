"""The metrics alert rules watch, by name: ``fn(project, model, since, until) -> float |
None`` (None: no data in the range, which changes no alert but a pending one).

======================  ================================================================
name                    computed by
======================  ================================================================
``latency_p95_ms``...   :data:`conveyor.monitoring.system_query.METRICS` (the system
                        monitors: latency, error rates, availability, rate, shed, cache)
``quality.<metric>``    :func:`conveyor.monitoring.quality.quality_metric` (labelled
                        predictions: ground truth joined by request id or entity key)
``drift.share``,        :func:`conveyor.monitoring.drift_live.drift_metric` (the latest
``prediction_drift``,   live drift check recorded in the range)
``cbpe.<metric>``
``data.<metric>``       :data:`conveyor.monitoring.data_quality.METRICS` (``model`` is
                        the data set)
======================  ================================================================

:func:`register_metric` adds one (a plugin's own monitor).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = ["MetricFn", "metric_function", "metric_value", "register_metric"]

MetricFn = Callable[["Project", "str | None", datetime, datetime], "float | None"]

_REGISTERED: dict[str, MetricFn] = {}


def register_metric(name: str, fn: MetricFn) -> None:
    """Make ``name`` a metric rules can watch (replaces a built-in one of that name)."""
    _REGISTERED[name] = fn


def metric_function(name: str) -> MetricFn:
    """The function computing ``name``; InvalidInputError when nothing computes it."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name.startswith("quality."):
        quality: Any = importlib.import_module("conveyor.monitoring.quality")
        fn: MetricFn = quality.quality_metric(name.removeprefix("quality."))
        return fn
    if name in ("drift.share", "prediction_drift") or name.startswith("cbpe."):
        drift: Any = importlib.import_module("conveyor.monitoring.drift_live")

        def drift_value(
            project: Project, model: str | None, since: datetime, until: datetime
        ) -> float | None:
            value: float | None = drift.drift_metric(project, name, model, since, until)
            return value

        return drift_value
    for module in ("conveyor.monitoring.system_query", "conveyor.monitoring.data_quality"):
        table: dict[str, MetricFn] = getattr(importlib.import_module(module), "METRICS", {})
        if name in table:
            return table[name]
    raise InvalidInputError(f"no monitor computes the metric {name!r}", field="metric")


def metric_value(
    project: Project,
    name: str,
    model: str | None,
    since: datetime,
    until: datetime,
    *,
    cache: dict[Any, Any] | None = None,
) -> float | None:
    """``name`` of ``model`` over ``[since, until)``; NaN is no data.

    With a ``cache`` (one evaluation's), the system monitors of one model and range are
    computed once, in one query, for every rule that reads them (latency, error rates,
    availability...)."""
    from conveyor.monitoring.alerts.settings import SYSTEM_METRICS

    if cache is not None and name in SYSTEM_METRICS and name not in _REGISTERED:
        key = ("system", model, since, until)
        if key not in cache:
            from conveyor.monitoring.query import MonitorQuery
            from conveyor.monitoring.system_query import system_summary

            cache[key] = system_summary(MonitorQuery(project), model, since=since, until=until)
        value = cache[key][name]
    else:
        value = metric_function(name)(project, model, since, until)
    if value is None or value != value:
        return None
    return float(value)
