"""Prometheus recording and alerting rules generated from the spec.

::

    from conveyor.monitoring.interop.prometheus import rules_yaml

    text = rules_yaml(project.spec)        # a rule file: promtool check rules accepts it

Recording rules: every monitor Prometheus can compute (:data:`names.MONITORS`) over each
window of ``monitoring.interop.windows`` and each window an alert rule uses, grouped by
model (the process monitors by instance): ``conveyor:latency_p95_ms:5m``.

Alerting rules: Conveyor's own alert rules
(:func:`conveyor.monitoring.alerts.rules.derive_rules`: the SLO-derived ones and the
spec's ``monitoring.alerts.rules``), translated with the same name, threshold,
comparison, ``for`` and severity (and ``keep_firing_for``: Conveyor's
``monitoring.alerts.resolve_after``), over the recording rule of their metric and window; a
rule for one model selects ``model="..."``, a rule on all traffic sums every model into
one series. A rule whose metric the server has no series for (quality, drift, CBPE,
data) reads ``conveyor_monitor``, the value Conveyor computes for that rule and exports
on ``GET /v1/monitor/metrics`` (:mod:`conveyor.monitoring.interop.exporter`); the file's
header names those rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError
from conveyor.monitoring.interop.names import (
    MONITORS,
    expression,
    prom_duration,
    record_name,
)
from conveyor.monitoring.interop.settings import InteropSpec, interop_of

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

_NOT_LABEL = re.compile(r"[^A-Za-z0-9_]")

__all__ = [
    "TARGET_DOWN",
    "FromEventLog",
    "alerting_rules",
    "conveyor_rules",
    "label_name",
    "label_value",
    "prometheus_config",
    "recording_rules",
    "rules_document",
    "rules_yaml",
    "target_down",
]


@dataclass(frozen=True, slots=True)
class FromEventLog:
    """An alert rule on a monitor the server has no series for (quality, drift, CBPE,
    data): its Prometheus rule reads ``conveyor_monitor``, the value Conveyor computes from
    its event log and exports on ``GET /v1/monitor/metrics``
    (:mod:`conveyor.monitoring.interop.exporter`)."""

    name: str
    metric: str


def label_value(value: str) -> str:
    """``value`` as a PromQL string literal (double-quoted, escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def label_name(name: str) -> str:
    """``name`` as a Prometheus label name: characters other than letters, digits and
    ``_`` become ``_``; a leading digit gets a ``_`` before it; ``__`` (reserved) too."""
    out = _NOT_LABEL.sub("_", name) or "_"
    if out[0].isdigit():
        out = "_" + out
    if out.startswith("__"):
        out = "label" + out
    return out


def recording_rules(
    settings: InteropSpec | None = None, windows: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """One recording rule per monitor and window (the spec's windows, then ``windows``)."""
    settings = settings or InteropSpec()
    rules: list[dict[str, Any]] = []
    from conveyor.durations import parse_duration

    spans = [parse_duration(w, "window").total_seconds() for w in settings.windows]
    for window in _unique([*map(prom_duration, spans), *windows]):
        for name in MONITORS:
            rules.append(
                {
                    "record": record_name(name, window),
                    "expr": expression(name, window, sel=settings.matchers),
                }
            )
    return rules


def alerting_rules(
    rules: Iterable[Any], sel: str = "", *, keep_firing_s: float = 0
) -> tuple[list[dict[str, Any]], list[FromEventLog]]:
    """Conveyor's alert rules (:class:`~conveyor.monitoring.alerts.rules.AlertRule`) as
    Prometheus alerting rules, and those of them that read the exported event-log
    monitors. ``sel``: label matchers of the server's series
    (``monitoring.interop.matchers``); ``keep_firing_s``: how long an alert stays firing
    once its condition clears (Conveyor's ``monitoring.alerts.resolve_after``; Prometheus
    2.42 and later)."""
    out: list[dict[str, Any]] = []
    exported: list[FromEventLog] = []
    for rule in rules:
        alert = _alert(rule, sel)
        if keep_firing_s > 0:
            labels = alert.pop("labels")
            annotations = alert.pop("annotations")
            alert["keep_firing_for"] = prom_duration(keep_firing_s)
            alert.update(labels=labels, annotations=annotations)
        out.append(alert)
        if str(rule.metric) not in MONITORS:
            exported.append(FromEventLog(rule.name, str(rule.metric)))
    return out, exported


def _alert(rule: Any, sel: str) -> dict[str, Any]:
    op = str(rule.op)
    if op not in (">", "<"):
        raise InvalidInputError(
            f"alert rule {rule.name!r}: op {op!r} has no PromQL form (expected > or <)",
            field="op",
        )
    threshold = float(rule.threshold)
    if not math.isfinite(threshold):
        raise InvalidInputError(
            f"alert rule {rule.name!r}: threshold {threshold} is not a finite number",
            field="threshold",
        )
    window = prom_duration(float(rule.window))
    if str(rule.metric) not in MONITORS:
        # Computed from the event log: the value Conveyor exports for this very rule.
        from conveyor.monitoring.interop.exporter import EXPORTED

        model = "" if rule.model is None else str(rule.model)
        series = (
            f"{EXPORTED}{{monitor={label_value(str(rule.metric))},"
            f"model={label_value(model)},window={label_value(window)}}}"
        )
    elif rule.model is None:
        # A rule on all traffic, as Conveyor evaluates it: every model's series as one.
        series = f"({expression(str(rule.metric), window, sel=sel, by='')})"
    else:
        series = f"{record_name(str(rule.metric), window)}{{model={label_value(str(rule.model))}}}"
    labels = {label_name(str(k)): str(v) for k, v in dict(rule.labels or {}).items()}
    # The labels Conveyor's own alerts carry (AlertRule.all_labels): silences and
    # inhibition match the same names on both sides.
    labels.update(severity=str(rule.severity), metric=str(rule.metric), source=str(rule.source))
    scope = "all traffic" if rule.model is None else str(rule.model)
    alert: dict[str, Any] = {
        "alert": str(rule.name),
        "expr": f"{series} {op} {threshold!r}",
    }
    for_s = float(rule.for_s or 0)
    if for_s > 0:
        alert["for"] = prom_duration(for_s)
    alert["labels"] = labels
    alert["annotations"] = {
        "summary": f"{scope}: {rule.metric} {op} {threshold:g} over {window}",
        "description": f"{rule.metric} is {{{{ $value }}}} over the last {window} "
        f"(threshold {op} {threshold:g}); Conveyor's alert rule {rule.name} ({rule.source}).",
    }
    return alert


def rules_document(
    spec: ProjectSpec, rules: Sequence[Any] | None = None
) -> tuple[dict[str, Any], list[FromEventLog]]:
    """The rule file (``{"groups": [...]}``) for ``spec``, and the alert rules in it that
    read the event-log monitors Conveyor exports. ``rules`` defaults to
    :func:`~conveyor.monitoring.alerts.rules.derive_rules`."""
    if rules is None:
        rules = conveyor_rules(spec)
    settings = interop_of(spec)
    alerts, exported = alerting_rules(rules, settings.matchers, keep_firing_s=_resolve_after(spec))
    windows = [
        prom_duration(float(r.window))
        for r in rules
        if str(r.metric) in MONITORS and r.model is not None
    ]
    interval = {"interval": settings.rule_interval} if settings.rule_interval else {}
    project = str(getattr(spec, "project", "conveyor"))
    groups: list[dict[str, Any]] = [
        {
            "name": f"conveyor:{project}:monitors",
            **interval,
            "rules": recording_rules(settings, windows),
        }
    ]
    alerts.append(target_down(spec))
    groups.append({"name": f"conveyor:{project}:alerts", **interval, "rules": alerts})
    return {"groups": groups}, exported


#: The alert only an outside watcher can raise: Conveyor's alerts run in the server.
TARGET_DOWN = "conveyor_target_down"


def target_down(spec: ProjectSpec) -> dict[str, Any]:
    """``conveyor_target_down``: a server Prometheus cannot scrape (``up == 0``), held
    ``monitoring.alerts.slo_for``. Conveyor has no such rule of its own: when the server
    is down, so is its evaluation. Labelled ``metric: availability`` so that, like an
    availability alert, it inhibits the latency and error alerts (Alertmanager)."""
    settings = interop_of(spec)
    sel = settings.matchers or 'job="conveyor"'
    for_s, severity = 300.0, "page"
    try:
        from conveyor.monitoring.alerts.rules import alerts_of
    except ImportError:
        pass
    else:
        alerts = alerts_of(spec)
        for_s, severity = alerts.seconds("slo_for"), alerts.slo_severity
    rule: dict[str, Any] = {"alert": TARGET_DOWN, "expr": f"up{{{sel}}} == 0"}
    if for_s > 0:
        rule["for"] = prom_duration(for_s)
    keep = _resolve_after(spec)
    if keep > 0:
        rule["keep_firing_for"] = prom_duration(keep)
    rule["labels"] = {"severity": severity, "metric": "availability", "source": "prometheus"}
    rule["annotations"] = {
        "summary": "{{ $labels.instance }}: Prometheus cannot scrape the Conveyor server",
        "description": "up is 0 for {{ $labels.instance }} (job {{ $labels.job }}): the "
        "server is down or unreachable, and its own alert evaluation with it.",
    }
    return rule


def _resolve_after(spec: ProjectSpec) -> float:
    """``monitoring.alerts.resolve_after`` in seconds (0 without the alerts package)."""
    try:
        from conveyor.monitoring.alerts.rules import alerts_of
    except ImportError:
        return 0.0
    return float(alerts_of(spec).seconds("resolve_after"))


def conveyor_rules(spec: ProjectSpec) -> list[Any]:
    """Conveyor's own alert rules for ``spec`` (:func:`derive_rules`); none without the
    alerts package."""
    try:
        from conveyor.monitoring.alerts.rules import derive_rules
    except ImportError:
        return []
    return list(derive_rules(spec))


def rules_yaml(spec: ProjectSpec, rules: Sequence[Any] | None = None) -> str:
    """:func:`rules_document` as the YAML text of a rule file, with a header naming what
    generated it and the alert rules that read Conveyor's exported monitors."""
    import yaml

    document, exported = rules_document(spec, rules)
    header = [
        "# Generated by `conveyor monitor prometheus-rules` from conveyor.yaml; do not edit:",
        "# regenerate it. Monitor names are Conveyor's (conveyor.monitoring.interop.names).",
    ]
    if exported:
        header += [
            "# These alert rules read conveyor_monitor, the values Conveyor computes from its",
            "# event log: scrape GET /v1/monitor/metrics of a server with a viewer key",
            "# (authorization: {credentials: KEY}) for them to have data:",
        ]
        header.extend(f"#   {e.name} ({e.metric})" for e in exported)
    body = yaml.safe_dump(document, sort_keys=False, width=1000, allow_unicode=True)
    return "\n".join(header) + "\n" + body


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def prometheus_config(
    spec: ProjectSpec,
    targets: Sequence[str],
    *,
    rules_file: str = "conveyor.rules.yml",
    key_file: str | None = None,
    scrape_interval: str = "15s",
    monitors_interval: str = "1m",
) -> dict[str, Any]:
    """A ``prometheus.yml`` scraping the servers at ``targets`` (``host:port``): job
    ``conveyor`` reads their ``/metrics``, job ``conveyor-monitors`` the event-log monitors
    of ``GET /v1/monitor/metrics``; both send the viewer key in ``key_file`` (a server with
    ``serving.auth: required`` asks for one on both routes); without a key, the monitors'
    job is left out. ``rules_file`` holds :func:`rules_yaml`."""
    from conveyor.monitoring.interop.settings import interop_of

    if not targets:
        raise InvalidInputError("at least one target (host:port) to scrape", field="target")
    for target in targets:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit() or "/" in target:
            raise InvalidInputError(
                f"target {target!r}: expected host:port, e.g. 127.0.0.1:8000", field="target"
            )
    settings = interop_of(spec)
    evaluation = settings.rule_interval or scrape_interval
    key = {"authorization": {"credentials_file": key_file}} if key_file is not None else {}
    jobs: list[dict[str, Any]] = [
        {"job_name": "conveyor", **key, "static_configs": [{"targets": list(targets)}]}
    ]
    if key_file is not None:
        jobs.append(
            {
                "job_name": "conveyor-monitors",
                "metrics_path": "/v1/monitor/metrics",
                "scrape_interval": monitors_interval,
                **key,
                "static_configs": [{"targets": list(targets)}],
            }
        )
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation},
        "rule_files": [rules_file],
        "scrape_configs": jobs,
    }
