"""The alerts part of the monitoring section: ``monitoring.alerts``.

::

    monitoring:
      alerts:
        evaluation_interval_s: 60        # conveyor serve evaluates the rules this often
        slo_window: 5m                   # rules derived from slos: (latency, availability...)
        slo_for: 5m
        max_error_rate: 0.05             # also derive an error_rate rule (4xx + 5xx share)
        resolve_after: 5m                # clear this long before an incident resolves
        cooldown: 30m                    # a new incident this soon after one is not notified
        repeat_interval: 4h              # a firing, unacknowledged incident is re-sent
        rules:
          - name: fraud_drift
            metric: drift.share
            model: fraud
            window: 1h
            op: ">"
            threshold: 0.3
            for: 0s
            severity: ticket
            actions: [{kind: retrain}]
        sinks:
          - {name: ops, kind: webhook, url: "https://hooks.example.com/conveyor"}
          - {name: chat, kind: slack, url: "https://hooks.slack.com/services/T/B/X"}
          - {name: pager, kind: pagerduty, routing_key_env: PD_ROUTING_KEY, severities: [page]}
          - {name: mail, kind: email, smtp_host: localhost, smtp_port: 25,
             sender: conveyor@example.com, to: [oncall@example.com]}

A malformed rule fails the spec's loading (``conveyor doctor``, ``conveyor serve``) with
its file, line and field: ``conveyor.yaml:14: monitoring.alerts.rules.0.op: Input should
be '>' or '<'``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "SYSTEM_METRICS",
    "ActionSpec",
    "AlertsSpec",
    "DeliverySpec",
    "InhibitSpec",
    "RuleSpec",
    "SinkSpec",
    "known_metric",
    "seconds",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)

#: Metrics computed from the server's events (request, failure and sample events).
SYSTEM_METRICS = (
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "error_rate",
    "server_error_rate",
    "availability",
    "requests_per_s",
    "shed_rate",
    "cache_hit_ratio",
)
#: Metrics of the other monitors (drift, data quality).
OTHER_METRICS = (
    "drift.share",
    "prediction_drift",
    "data.null_rate",
    "data.out_of_range_rate",
    "data.quarantine_rate",
    "data.freshness_s",
    "data.schema_changed",
)
#: Families named by a prefix: ``quality.roc_auc``, ``cbpe.accuracy``.
METRIC_PREFIXES = ("quality.", "cbpe.")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_:.-]{0,127}$")
_METRIC_SUFFIX = re.compile(r"^[a-z][a-z0-9_@]*$")


def known_metric(name: str) -> bool:
    """Whether ``name`` is a metric an alert rule can watch."""
    if name in SYSTEM_METRICS or name in OTHER_METRICS:
        return True
    for prefix in METRIC_PREFIXES:
        if name.startswith(prefix) and _METRIC_SUFFIX.match(name[len(prefix) :]):
            return True
    return False


def seconds(value: Any, where: str, *, zero: bool = False) -> float:
    """A spec duration (``5m``, ``1h30m``, a number of seconds) in seconds; ``zero``
    allows ``0``/``0s`` (a rule that fires at once)."""
    from conveyor.durations import spec_duration

    if zero and (value == 0 or (isinstance(value, str) and re.fullmatch(r"0+[smhdw]?", value))):
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return spec_duration(value, where).total_seconds()


def _duration(zero: bool = False) -> Any:
    """A validator keeping a duration as given, after checking it parses."""

    def check(value: Any, info: Any) -> Any:
        from conveyor.errors import ConveyorError

        try:
            seconds(value, info.field_name, zero=zero)
        except ConveyorError as exc:
            raise ValueError(exc.message) from None
        return value

    return check


class ActionSpec(BaseModel):
    """What a firing alert does besides notifying (each action is an event linked to the
    alert: ``alert.action`` with its id)."""

    model_config = _STRICT

    kind: Literal["retrain", "rollback", "review"] = Field(
        description="retrain: start the model's retraining (its retrain: triggers); "
        "rollback: roll the model's route back to its previous version; review: open a "
        "review item for a person."
    )
    model: str | None = Field(None, description="The model acted on (default: the alert's model).")
    note: str | None = Field(None, description="Free text carried into the action's event.")


class RuleSpec(BaseModel):
    """A user's alert rule: a metric over a window against a threshold, held for a while."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(
        description="Unique rule name: letters, digits, '_', ':', '.', '-' (a letter or '_' "
        "first).",
    )
    metric: str = Field(
        description="What is watched: latency_p95_ms, error_rate, availability, "
        "quality.roc_auc, drift.share, cbpe.accuracy, data.freshness_s..."
    )
    model: str | None = Field(None, description="Only this model (default: all traffic).")
    window: str | float = Field("5m", description="The metric's window: 5m, 1h, or seconds.")
    op: Literal[">", "<"] = Field(description="Fires while metric op threshold.")
    threshold: float = Field(description="The threshold (finite).", allow_inf_nan=False)
    for_: str | float = Field(
        "0s",
        alias="for",
        description="How long the condition must hold before the alert fires (0s: at once).",
    )
    severity: Literal["page", "ticket", "info"] = Field("ticket", description="page, ticket, info.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels (matchers).")
    actions: list[ActionSpec] = Field(
        default_factory=list, description="What the alert does when it fires."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r}: letters, digits, '_', ':', '.', '-', starting with a letter or '_'"
            )
        return value

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if not known_metric(value):
            known = ", ".join((*SYSTEM_METRICS, *OTHER_METRICS, "quality.<m>", "cbpe.<m>"))
            raise ValueError(f"unknown metric {value!r}; known: {known}")
        if value.startswith("quality."):  # one of the gates' metrics (roc_auc, rmse, ndcg@5...)
            from conveyor.checks.metrics import metric
            from conveyor.errors import ConveyorError

            try:
                metric(value.removeprefix("quality."))
            except ConveyorError as exc:
                raise ValueError(f"{value!r}: {exc.message}") from None
        return value

    _window = field_validator("window")(_duration())
    _for = field_validator("for_")(_duration(zero=True))


def _all_severities() -> list[Literal["page", "ticket", "info"]]:
    return ["page", "ticket", "info"]


class SinkSpec(BaseModel):
    """Where notifications go."""

    model_config = _STRICT

    name: str = Field(description="Unique sink name (shown in conveyor alerts list).")
    kind: Literal["webhook", "slack", "pagerduty", "email", "events"] = Field(
        description="webhook (generic JSON), slack (Slack-compatible incoming webhook), "
        "pagerduty (Events API v2), email (SMTP), events (the event log only)."
    )
    url: str | None = Field(
        None,
        description="webhook, slack: the URL posted to; pagerduty: the Events API "
        "(default https://events.pagerduty.com/v2/enqueue).",
    )
    url_env: str | None = Field(
        None,
        description="The environment variable holding the URL instead (a Slack webhook's URL "
        "is a secret): read when a notification is sent.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="webhook: extra HTTP headers."
    )
    routing_key_env: str | None = Field(
        None, description="pagerduty: the environment variable holding the routing key."
    )
    smtp_host: str | None = Field(None, description="email: the SMTP server.")
    smtp_port: int = Field(25, ge=1, le=65535, description="email: its port.")
    starttls: bool = Field(False, description="email: STARTTLS before sending.")
    username_env: str | None = Field(None, description="email: env var of the SMTP user.")
    password_env: str | None = Field(None, description="email: env var of the SMTP password.")
    sender: str | None = Field(None, description="email: From.")
    to: list[str] = Field(default_factory=list, description="email: recipients.")
    severities: list[Literal["page", "ticket", "info"]] = Field(
        default_factory=_all_severities,
        description="Only alerts of these severities go to this sink.",
    )

    @model_validator(mode="after")
    def _complete(self) -> SinkSpec:
        if self.kind in ("webhook", "slack") and not (self.url or self.url_env):
            raise ValueError(f"sink {self.name!r}: a {self.kind} sink needs a url (or url_env)")
        if self.url and self.url_env:
            raise ValueError(f"sink {self.name!r}: give url or url_env, not both")
        if self.kind == "pagerduty" and not self.routing_key_env:
            raise ValueError(f"sink {self.name!r}: a pagerduty sink needs routing_key_env")
        if self.kind == "email" and not (self.smtp_host and self.sender and self.to):
            raise ValueError(f"sink {self.name!r}: an email sink needs smtp_host, sender and to")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError(f"sink {self.name!r}: url must be http:// or https://")
        return self


class DeliverySpec(BaseModel):
    """How notifications are delivered: each sink on its own worker, with retries,
    backoff, a timeout and a circuit breaker, so a dead or hung sink delays no other."""

    model_config = _STRICT

    timeout_s: float = Field(5.0, gt=0, le=120, description="One attempt's longest wait.")
    retries: int = Field(3, ge=0, le=20, description="Attempts after the first.")
    backoff_s: float = Field(
        1.0, gt=0, le=600, description="First retry's wait; doubled each retry (jittered)."
    )
    max_backoff_s: float = Field(60.0, gt=0, le=3600, description="Longest wait between tries.")
    breaker_failures: int = Field(
        3, ge=1, le=100, description="Failed deliveries in a row that mark a sink failing."
    )
    breaker_reset_s: float = Field(
        30.0, gt=0, le=3600, description="Wait before one trial delivery to a failing sink."
    )


class InhibitSpec(BaseModel):
    """While an alert on a ``source`` metric fires for a model, alerts on the ``target``
    metrics of the same model are not notified (server down: no latency page too)."""

    model_config = _STRICT

    source: list[str] = Field(description="Metrics whose firing alerts inhibit.")
    target: list[str] = Field(description="Metrics whose alerts are inhibited.")


def _default_inhibit() -> list[dict[str, list[str]]]:
    # plain data (validated: validate_default), so docs/spec.md shows it as YAML would
    return [
        {
            "source": ["availability", "server_error_rate"],
            "target": ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "error_rate"],
        }
    ]


class AlertsSpec(BaseModel):
    """Alert rules (from the SLOs and the spec), their evaluation, and where they notify."""

    model_config = _STRICT

    enabled: bool = Field(True, description="Evaluate rules inside conveyor serve.")
    evaluation_interval_s: float = Field(
        60, ge=1, le=3600, description="How often conveyor serve evaluates the rules."
    )
    slo_rules: bool = Field(True, description="Derive rules from slos: for each model.")
    slo_window: str = Field("5m", description="Window of the SLO-derived rules.")
    slo_for: str = Field("5m", description="How long an SLO breach holds before it fires.")
    slo_severity: Literal["page", "ticket", "info"] = Field(
        "page", description="Severity of the SLO-derived rules."
    )
    quality_window: str = Field("1d", description="Window of the quality-floor rule.")
    max_error_rate: float | None = Field(
        None, gt=0, le=1, description="Derive an error_rate rule (4xx + 5xx share) too."
    )
    resolve_after: str = Field(
        "5m", description="An incident resolves after its condition stays clear this long."
    )
    cooldown: str = Field(
        "30m",
        description="A new incident of the same alert within this time after the last one "
        "resolved is recorded but not notified.",
    )
    repeat_interval: str = Field(
        "4h", description="A firing, unacknowledged incident is notified again this often."
    )
    rules: list[RuleSpec] = Field(default_factory=list, description="User rules.")
    sinks: list[SinkSpec] = Field(
        default_factory=list,
        description="Where notifications go (alert.* events are always written).",
    )
    delivery: DeliverySpec = Field(default_factory=DeliverySpec)
    inhibit: list[InhibitSpec] = Field(
        default_factory=_default_inhibit,
        validate_default=True,
        description="Inhibition rules (default: availability inhibits latency and errors).",
    )

    _durations = field_validator("slo_window", "slo_for", "quality_window", "repeat_interval")(
        _duration()
    )
    _zero_ok = field_validator("resolve_after", "cooldown")(_duration(zero=True))

    @model_validator(mode="after")
    def _unique(self) -> AlertsSpec:
        for what, names in (
            ("rule", [r.name for r in self.rules]),
            ("sink", [s.name for s in self.sinks]),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"two {what}s named {name!r}")
                seen.add(name)
        return self

    def seconds(self, field: str) -> float:
        """A duration field in seconds."""
        return seconds(getattr(self, field), f"monitoring.alerts.{field}", zero=True)
