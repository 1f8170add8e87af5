"""Alert rules: a metric over a window against a threshold, held ``for_s`` seconds.

:func:`derive_rules` gives a project's rules: those derived from its ``slos:`` for each
model of ``models:`` (or for all traffic when it declares none), then the user rules of
``monitoring.alerts.rules``:

=========================  =================  ===================================
SLO                        metric             fires while
=========================  =================  ===================================
``latency_p95_ms: 250``    ``latency_p95_ms`` ``> 250``
``availability: 0.999``    ``availability``   ``< 0.999``
``quality: {roc_auc, 0.8}``  ``quality.roc_auc`` ``< 0.8`` (``>`` minimized; per model only)
alerts ``max_error_rate``  ``error_rate``     ``> max_error_rate``
=========================  =================  ===================================

The same rules become Prometheus alerting rules
(:mod:`conveyor.monitoring.interop.prometheus`): same names, thresholds and ``for``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec
    from conveyor.monitoring.alerts.settings import ActionSpec, AlertsSpec, RuleSpec

__all__ = ["AlertRule", "alerts_of", "derive_rules"]

Op = Literal[">", "<"]
Severity = Literal["page", "ticket", "info"]


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One rule as the engine evaluates it (durations in seconds)."""

    name: str
    metric: str
    model: str | None
    window: float
    op: Op
    threshold: float
    for_s: float
    severity: Severity
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    source: Literal["slo", "spec"] = "spec"
    actions: tuple[ActionSpec, ...] = ()

    def breached(self, value: float) -> bool:
        """Whether ``value`` is on the alerting side of the threshold."""
        return value > self.threshold if self.op == ">" else value < self.threshold

    @property
    def all_labels(self) -> dict[str, str]:
        """The labels silences and inhibition match on: the rule's own, plus
        ``alertname``, ``metric``, ``severity``, ``source`` and ``model`` (when set)."""
        out = dict(self.labels)
        out.update(alertname=self.name, metric=self.metric, severity=self.severity)
        out["source"] = self.source
        if self.model is not None:
            out["model"] = self.model
        return out

    def describe(self) -> str:
        scope = self.model or "all traffic"
        return (
            f"{self.metric} {self.op} {self.threshold:g} over {_span(self.window)} "
            f"for {_span(self.for_s)} ({scope})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "model": self.model,
            "window_s": self.window,
            "op": self.op,
            "threshold": self.threshold,
            "for_s": self.for_s,
            "severity": self.severity,
            "labels": dict(self.labels),
            "source": self.source,
            "actions": [a.model_dump(exclude_none=True) for a in self.actions],
        }


def alerts_of(spec: ProjectSpec) -> AlertsSpec:
    """``monitoring.alerts`` (defaults when absent)."""
    from conveyor.monitoring.alerts.settings import AlertsSpec
    from conveyor.monitoring.settings import monitoring_of

    found = getattr(monitoring_of(spec), "alerts", None)
    return found if isinstance(found, AlertsSpec) else AlertsSpec()


def derive_rules(spec: ProjectSpec, settings: AlertsSpec | None = None) -> list[AlertRule]:
    """The SLO-derived rules for each model, then the spec's own rules."""
    alerts = settings if settings is not None else alerts_of(spec)
    rules: list[AlertRule] = []
    if alerts.slo_rules:
        models: list[str | None] = list(_model_names(spec)) or [None]
        for model in models:
            rules.extend(_slo_rules(spec, alerts, model))
    rules.extend(user_rule(r) for r in alerts.rules)
    return rules


def user_rule(spec: RuleSpec) -> AlertRule:
    from conveyor.monitoring.alerts.settings import seconds

    where = f"monitoring.alerts.rules[{spec.name}]"
    return AlertRule(
        name=spec.name,
        metric=spec.metric,
        model=spec.model,
        window=seconds(spec.window, f"{where}.window"),
        op=spec.op,
        threshold=float(spec.threshold),
        for_s=seconds(spec.for_, f"{where}.for", zero=True),
        severity=spec.severity,
        labels=dict(spec.labels),
        source="spec",
        actions=tuple(spec.actions),
    )


def _slo_rules(spec: ProjectSpec, alerts: AlertsSpec, model: str | None) -> list[AlertRule]:
    slos = spec.slos
    window = alerts.seconds("slo_window")
    for_s = alerts.seconds("slo_for")
    suffix = "" if model is None else f":{model}"
    common: dict[str, Any] = {
        "model": model,
        "severity": alerts.slo_severity,
        "source": "slo",
    }
    out: list[AlertRule] = []
    if slos.latency_p95_ms is not None:
        out.append(
            AlertRule(
                name=f"slo_latency_p95_ms{suffix}",
                metric="latency_p95_ms",
                window=window,
                op=">",
                threshold=float(slos.latency_p95_ms),
                for_s=for_s,
                **common,
            )
        )
    if slos.availability is not None:
        out.append(
            AlertRule(
                name=f"slo_availability{suffix}",
                metric="availability",
                window=window,
                op="<",
                threshold=float(slos.availability),
                for_s=for_s,
                **common,
            )
        )
    if alerts.max_error_rate is not None:
        out.append(
            AlertRule(
                name=f"slo_error_rate{suffix}",
                metric="error_rate",
                window=window,
                op=">",
                threshold=float(alerts.max_error_rate),
                for_s=for_s,
                **common,
            )
        )
    if slos.quality is not None and model is not None:  # quality is a model's
        out.append(
            AlertRule(
                name=f"slo_quality{suffix}",
                metric=f"quality.{slos.quality.metric}",
                window=alerts.seconds("quality_window"),
                op="<" if slos.quality.direction == "maximize" else ">",
                threshold=float(slos.quality.floor),
                for_s=0.0,  # a quality window is already long; its breach is the signal
                **common,
            )
        )
    return out


def _model_names(spec: ProjectSpec) -> list[str]:
    """The models of ``models:`` (the training capability's section), if any."""
    try:
        models = spec.section("models")
    except Exception:  # no training capability installed: no per-model rules
        return []
    return sorted(models) if isinstance(models, dict) else []


def _span(s: float) -> str:
    if s == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{int(s // size)}{unit}"
    return f"{s:g}s"
