"""An Alertmanager configuration generated from ``monitoring.alerts``, for the alerts the
generated Prometheus rules fire to group, repeat, inhibit and notify as Conveyor's do.

::

    from conveyor.monitoring.interop.alertmanager import alertmanager_yaml

    text = alertmanager_yaml(project.spec)    # amtool check-config accepts it

======================================  ============================================
Conveyor (``monitoring.alerts``)        Alertmanager
======================================  ============================================
one incident per rule and model         ``group_by: [alertname, model]``
``repeat_interval``                     ``route.repeat_interval``
``inhibit`` (availability inhibits      ``inhibit_rules`` on the ``metric`` label,
latency and errors of the same model)   ``equal: [model]``
sink ``webhook``, ``slack``              a receiver with ``webhook_configs``,
                                        ``slack_configs`` (``send_resolved``)
sink ``email``                          ``email_configs`` (the password: fill in
                                        ``auth_password``; Conveyor reads it from
                                        an environment variable)
a sink's ``severities``                 a child route matching ``severity``
======================================  ============================================

PagerDuty sinks keep their routing key in an environment variable Alertmanager does not
read: they are listed in the header for the operator to add. ``cooldown`` has no
Alertmanager counterpart (Alertmanager notifies a new group at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.monitoring.interop.names import prom_duration

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["alertmanager_config", "alertmanager_yaml"]

#: The receiver of alerts no sink takes (Alertmanager needs a root receiver).
NOBODY = "conveyor-none"


def alertmanager_config(spec: ProjectSpec) -> tuple[dict[str, Any], list[str]]:
    """The configuration (a dict) and the notes for its header (sinks left to the
    operator)."""
    from conveyor.monitoring.alerts.rules import alerts_of
    from conveyor.monitoring.interop.prometheus import label_value

    alerts = alerts_of(spec)
    notes: list[str] = []
    receivers: list[dict[str, Any]] = [{"name": NOBODY}]
    routes: list[dict[str, Any]] = []
    for sink in alerts.sinks:
        receiver = _receiver(sink)
        if receiver is None:
            notes.append(
                f"sink {sink.name!r} ({sink.kind}): "
                + (
                    "its routing key is in an environment variable; add a receiver with "
                    "pagerduty_configs by hand"
                    if sink.kind == "pagerduty"
                    else "Conveyor's event log only, no receiver"
                )
            )
            continue
        receivers.append(receiver)
        route: dict[str, Any] = {"receiver": sink.name, "continue": True}
        if sink.severities and set(sink.severities) != {"page", "ticket", "info"}:
            chosen = "|".join(sorted(sink.severities))
            route["matchers"] = [f"severity=~{label_value(chosen)}"]
        routes.append(route)
        if sink.kind == "webhook" and sink.headers:
            notes.append(
                f"sink {sink.name!r} (webhook): its headers are not carried over (Alertmanager "
                "sets authorization through http_config)"
            )
        if sink.kind == "email" and sink.password_env:
            notes.append(
                f"sink {sink.name!r} (email): set auth_password (Conveyor reads it from "
                f"${sink.password_env})"
            )
    inhibit = [
        {
            "source_matchers": [f"metric=~{label_value('|'.join(i.source))}"],
            "target_matchers": [f"metric=~{label_value('|'.join(i.target))}"],
            "equal": ["model"],
        }
        for i in alerts.inhibit
    ]
    config: dict[str, Any] = {
        "route": {
            "receiver": NOBODY,
            "group_by": ["alertname", "model"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": prom_duration(alerts.seconds("repeat_interval")),
            **({"routes": routes} if routes else {}),
        },
        "receivers": receivers,
        **({"inhibit_rules": inhibit} if inhibit else {}),
    }
    return config, notes


def _receiver(sink: Any) -> dict[str, Any] | None:
    if sink.kind == "webhook":
        config: dict[str, Any] = {"url": sink.url, "send_resolved": True}
        return {"name": sink.name, "webhook_configs": [config]}
    if sink.kind == "slack":
        return {"name": sink.name, "slack_configs": [{"api_url": sink.url, "send_resolved": True}]}
    if sink.kind == "email":
        email: dict[str, Any] = {
            "to": ", ".join(sink.to),
            "from": sink.sender,
            "smarthost": f"{sink.smtp_host}:{sink.smtp_port}",
            "require_tls": bool(sink.starttls),
            "send_resolved": True,
        }
        return {"name": sink.name, "email_configs": [email]}
    return None  # pagerduty (a secret in the environment), events (the log itself)


def alertmanager_yaml(spec: ProjectSpec) -> str:
    """:func:`alertmanager_config` as YAML, with a header."""
    import yaml

    config, notes = alertmanager_config(spec)
    header = [
        "# Generated by `conveyor monitor alertmanager` from conveyor.yaml (monitoring.alerts):",
        "# grouping, repeat and inhibition as Conveyor's own alerts do them. Webhooks receive",
        "# Alertmanager's payload, not Conveyor's.",
    ]
    header.extend(f"# {note}" for note in notes)
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, width=1000)
