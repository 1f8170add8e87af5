"""Conveyor's event-log monitors as Prometheus series: ``GET /v1/monitor/metrics``.

Quality from feedback, drift of live traffic, CBPE estimates and data-quality monitors
are computed from the event log, not counted by the server. For every alert rule on one
of them (:func:`~conveyor.monitoring.alerts.rules.derive_rules`), this endpoint answers
the value Conveyor computes over the rule's window
(:func:`~conveyor.monitoring.alerts.metrics.metric_value`), in the exposition format::

    # TYPE conveyor_monitor gauge
    conveyor_monitor{monitor="quality.roc_auc",model="fraud",window="1d"} 0.912
    conveyor_monitor{monitor="drift.share",model="fraud",window="1h"} 0.05

so Prometheus alerts on them with the same thresholds (the generated rules do) and
Grafana draws them. A value with no data in its window is left out (as Conveyor's own
alert sees "no data"); one whose computation fails is left out and counted in
``conveyor_monitor_failures_total``. Values are computed at most every
``monitoring.interop.export_interval_s`` seconds, whatever the scrape interval, off the
event loop and, but for the first, in the background: a scrape is answered at once with
the latest values. The route needs a key with role viewer (``monitoring.read``): a Prometheus
scrape job sends it as a bearer token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.monitoring.interop.names import MONITORS, prom_duration

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = ["EXPORTED", "Exporter", "exported_series", "render"]

log = logging.getLogger("conveyor.monitoring")

#: The series name of the exported monitors.
EXPORTED = "conveyor_monitor"


def exported_series(rules: Any) -> list[tuple[str, str | None, str]]:
    """The (monitor, model, window) the endpoint answers: those of the alert rules whose
    metric has no series of its own on the server, each once, in rule order."""
    seen: dict[tuple[str, str | None, str], None] = {}
    for rule in rules:
        if str(rule.metric) not in MONITORS:
            seen.setdefault((str(rule.metric), rule.model, prom_duration(float(rule.window))))
    return list(seen)


@dataclass
class Exporter:
    """Computes the exported values for ``project``, at most every ``interval_s``."""

    project: Project
    interval_s: float = 60.0
    _text: str | None = None
    _at: float = -1e18
    _failures: dict[str, int] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _refreshing: asyncio.Task[None] | None = None

    async def text(self) -> str:
        """The latest values. The first call computes them; later ones answer at once and,
        when they are older than ``interval_s``, start a refresh in the background: a
        scrape never waits for a computation (its timeout is often a second)."""
        if self._text is None:
            async with self._lock:
                if self._text is None:
                    await self._refresh()
        elif time.monotonic() - self._at >= self.interval_s and (
            self._refreshing is None or self._refreshing.done()
        ):
            self._refreshing = asyncio.create_task(self._refresh())
        return self._text or render([], self._failures)

    async def _refresh(self) -> None:
        try:
            text = await asyncio.to_thread(self.compute)
        except Exception:  # the rules themselves could not be read: keep the last values
            log.exception("computing the exported monitors failed")
            self._at = time.monotonic()  # retried after interval_s, not at every scrape
            return
        self._text, self._at = text, time.monotonic()

    def compute(self, now: datetime | None = None) -> str:
        from conveyor.durations import parse_duration
        from conveyor.monitoring.alerts.metrics import metric_value
        from conveyor.monitoring.interop.prometheus import conveyor_rules

        now = now or datetime.now(UTC)
        values: list[tuple[str, str | None, str, float]] = []
        for monitor, model, window in exported_series(conveyor_rules(self.project.spec)):
            span: timedelta = parse_duration(window, "window")
            try:
                value = metric_value(self.project, monitor, model, now - span, now)
            except Exception:  # one monitor failing never hides the others
                log.exception("exporting %s of %s over %s failed", monitor, model, window)
                self._failures[monitor] = self._failures.get(monitor, 0) + 1
                continue
            if value is not None:
                values.append((monitor, model, window, value))
        return render(values, self._failures)


def render(
    values: list[tuple[str, str | None, str, float]], failures: dict[str, int] | None = None
) -> str:
    """The exposition text of ``values`` ((monitor, model, window, value)) and the
    failures per monitor."""
    from conveyor.monitoring.interop.prometheus import label_value

    lines = [
        f"# HELP {EXPORTED} A monitor Conveyor computes from its event log (quality, drift, "
        "CBPE, data quality), by monitor, model and window.",
        f"# TYPE {EXPORTED} gauge",
    ]
    for monitor, model, window, value in values:
        labels = f"monitor={label_value(monitor)}"
        if model is not None:
            labels += f",model={label_value(model)}"
        labels += f",window={label_value(window)}"
        lines.append(f"{EXPORTED}{{{labels}}} {_number(value)}")
    lines += [
        f"# HELP {EXPORTED}_failures_total Computations of an exported monitor that failed "
        "(logged), since the server started.",
        f"# TYPE {EXPORTED}_failures_total counter",
    ]
    for monitor, count in sorted((failures or {}).items()):
        lines.append(f"{EXPORTED}_failures_total{{monitor={label_value(monitor)}}} {count}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
