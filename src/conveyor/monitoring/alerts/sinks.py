"""Notification sinks: generic JSON webhook, Slack-compatible webhook, PagerDuty Events
API v2, email over SMTP. Each turns a :class:`~conveyor.monitoring.alerts.engine.Notification`
into its payload (:meth:`Sink.payloads`, pure) and sends it (:meth:`Sink.send`, one
attempt, bounded by ``timeout``; any failure is a :class:`SinkError`). Retries, backoff
and the circuit breaker are :mod:`conveyor.monitoring.alerts.delivery`'s.

The event log is not a sink here: ``alert.fired`` and ``alert.resolved`` are written by
the evaluator itself, whatever the sinks do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.errors import BackendUnavailableError

if TYPE_CHECKING:
    from conveyor.monitoring.alerts.engine import Notification
    from conveyor.monitoring.alerts.settings import SinkSpec

__all__ = ["PAGERDUTY_URL", "Sink", "SinkError", "build_sink"]

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
_PD_SEVERITY = {"page": "critical", "ticket": "warning", "info": "info"}


class SinkError(BackendUnavailableError):
    """A delivery attempt failed (refused, timed out, answered an error)."""


class Sink:
    """One destination (``spec``), with the environment its secrets come from."""

    def __init__(self, spec: SinkSpec, env: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.kind = spec.kind
        self._env = os.environ if env is None else env
        self._client: Any = None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def accepts(self, notification: Notification) -> bool:
        """Whether any alert of ``notification`` has a severity this sink takes."""
        return any(a.severity in self.spec.severities for a in notification.alerts)

    def payloads(self, notification: Notification) -> list[dict[str, Any]]:
        """What is sent: one JSON body (PagerDuty: one event per alert)."""
        body = notification.to_dict()
        if self.kind == "webhook":
            return [body]
        if self.kind == "slack":
            return [_slack(notification)]
        if self.kind == "pagerduty":
            return [_pagerduty(notification, a, self._routing_key()) for a in notification.alerts]
        if self.kind == "email":
            return [{"subject": notification.title(), "text": _text(notification), "json": body}]
        return []

    def send(self, notification: Notification, timeout: float) -> None:
        """One attempt; SinkError on any failure."""
        payloads = self.payloads(notification)
        if self.kind == "email":
            self._mail(payloads[0], timeout)
            return
        url = self._url()
        if url is None or self.kind == "events":
            return
        where = _where(url)  # errors name the host, never the URL (it can hold a secret)
        import httpx

        headers = {"content-type": "application/json", **self.spec.headers}
        if self._client is None:  # one per sink, kept: its worker thread is its only user
            self._client = httpx.Client()
        try:
            for payload in payloads:
                answer = self._client.post(url, json=payload, headers=headers, timeout=timeout)
                if answer.status_code >= 300:
                    raise SinkError(
                        f"sink {self.name!r}: {where} answered {answer.status_code}",
                        sink=self.name,
                        status=answer.status_code,
                    )
        except httpx.HTTPError as exc:
            raise SinkError(
                f"sink {self.name!r}: {where}: {type(exc).__name__}", sink=self.name
            ) from exc

    def _url(self) -> str | None:
        if self.spec.url_env:
            url = self._env.get(self.spec.url_env, "")
            if not url:
                raise SinkError(
                    f"sink {self.name!r}: the URL variable {self.spec.url_env} is not set",
                    sink=self.name,
                )
            return url
        return self.spec.url or (PAGERDUTY_URL if self.kind == "pagerduty" else None)

    def _routing_key(self) -> str:
        env = self.spec.routing_key_env or ""
        key = self._env.get(env, "")
        if not key:
            raise SinkError(
                f"sink {self.name!r}: the routing key variable {env} is not set", sink=self.name
            )
        return key

    def _mail(self, payload: dict[str, Any], timeout: float) -> None:
        import smtplib
        from email.message import EmailMessage

        spec = self.spec
        message = EmailMessage()
        message["Subject"] = payload["subject"]
        message["From"] = spec.sender or ""
        message["To"] = ", ".join(spec.to)
        message.set_content(payload["text"])
        try:
            with smtplib.SMTP(spec.smtp_host or "", spec.smtp_port, timeout=timeout) as smtp:
                if spec.starttls:
                    smtp.starttls()
                user = self._env.get(spec.username_env or "") if spec.username_env else None
                if user:
                    smtp.login(user, self._env.get(spec.password_env or "", ""))
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise SinkError(
                f"sink {self.name!r}: SMTP {spec.smtp_host}:{spec.smtp_port}: {exc}",
                sink=self.name,
            ) from exc


def _where(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def build_sink(spec: SinkSpec, env: Mapping[str, str] | None = None) -> Sink:
    return Sink(spec, env)


def _text(notification: Notification) -> str:
    lines = [notification.title(), ""]
    for alert in notification.alerts:
        lines.append(f"- {alert.summary()}  [{alert.severity}] id {alert.id}")
        lines.append(
            f"  since {alert.started_at.isoformat()}, {alert.count} evaluations, "
            f"{alert.flaps} flaps"
        )
    return "\n".join(lines)


def _slack(notification: Notification) -> dict[str, Any]:
    icon = {
        "firing": ":rotating_light:",
        "repeat": ":rotating_light:",
        "resolved": ":white_check_mark:",
    }
    head = f"{icon.get(notification.kind, ':information_source:')} {notification.title()}"
    details = "\n".join(f"• {a.summary()} (`{a.id}`)" for a in notification.alerts)
    return {
        "text": head,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": details[:3000]}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"project {notification.project} · severity "
                        f"{notification.severity} · {notification.at.isoformat()}",
                    }
                ],
            },
        ],
    }


def _pagerduty(notification: Notification, alert: Any, routing_key: str) -> dict[str, Any]:
    dedup = f"conveyor:{notification.project}:{alert.id}"
    if notification.kind == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup}
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": {
            "summary": alert.summary()[:1024],
            "source": f"conveyor:{notification.project}",
            "severity": _PD_SEVERITY.get(alert.severity, "error"),
            "timestamp": (alert.fired_at or alert.started_at).isoformat(),
            "component": alert.model or "all",
            "group": notification.group,
            "class": alert.metric,
            "custom_details": {
                "rule": alert.rule,
                "value": alert.value,
                "threshold": alert.threshold,
                "count": alert.count,
                "flaps": alert.flaps,
                "labels": alert.labels,
            },
        },
    }
