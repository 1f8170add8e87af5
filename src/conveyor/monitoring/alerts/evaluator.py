"""One project's alerting: rules from the spec, metric values from the monitors, the
engine's decisions persisted, events written, notifications delivered, actions run.

::

    with Evaluator(project) as alerts:
        result = alerts.evaluate()          # once (conveyor alerts evaluate)
        alerts.dispatcher.drain()

In ``conveyor serve`` an :class:`AlertLoop` evaluates every
``monitoring.alerts.evaluation_interval_s``; of all the workers and servers sharing the
metadata store, only the holder of the evaluator's lease evaluates (it renews it each
time; another takes over when it lapses), so an incident is notified once.

Actions of a rule run once, when its incident begins firing, unless the alert is
silenced, inhibited or in cooldown:

- ``retrain``: writes ``alert.retrain_requested`` about the model (list that kind in the
  model's ``retrain.on_events``: ``conveyor pipeline schedule`` starts the retraining);
- ``rollback``: rolls the model's route back to its previous revision (as ``conveyor
  rollback`` does), with the alert as the reason;
- ``review``: opens a review item (``conveyor alerts show ID`` lists it).

Each writes ``alert.action`` with the alert's id, what it did, or its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.monitoring.alerts.delivery import Delivery, Dispatcher, SinkStatus
    from conveyor.monitoring.alerts.engine import Engine, Incident, Notification
    from conveyor.monitoring.alerts.rules import AlertRule
    from conveyor.monitoring.alerts.settings import ActionSpec, AlertsSpec
    from conveyor.monitoring.alerts.store import SqlStore
    from conveyor.project import Project

__all__ = ["AlertLoop", "EvaluationResult", "Evaluator"]

log = logging.getLogger("conveyor.alerts")

ACTOR = "alerts"


@dataclass
class EvaluationResult:
    at: datetime
    values: dict[str, float | None]
    errors: dict[str, str]
    notifications: list[Notification]
    fired: list[Incident]
    resolved: list[Incident]
    actions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "values": self.values,
            "errors": self.errors,
            "notifications": [n.to_dict() for n in self.notifications],
            "fired": [i.id for i in self.fired],
            "resolved": [i.id for i in self.resolved],
            "actions": self.actions,
        }


class Evaluator:
    """The rules of ``project``'s spec, evaluated against its monitors."""

    def __init__(
        self,
        project: Project,
        *,
        settings: AlertsSpec | None = None,
        rules: list[AlertRule] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        from conveyor.monitoring.alerts.delivery import Dispatcher
        from conveyor.monitoring.alerts.engine import Engine
        from conveyor.monitoring.alerts.rules import alerts_of, derive_rules
        from conveyor.monitoring.alerts.sinks import Sink
        from conveyor.monitoring.alerts.store import SqlStore

        self.project = project
        self.settings = settings if settings is not None else alerts_of(project.spec)
        self.rules = rules if rules is not None else derive_rules(project.spec, self.settings)
        self.store: SqlStore = SqlStore(project.store)
        self.engine: Engine = Engine(
            self.rules, self.settings, self.store, project=project.spec.project
        )
        self.sinks = [Sink(s, env) for s in self.settings.sinks]
        self.dispatcher: Dispatcher = Dispatcher(
            self.sinks, self.settings.delivery, on_result=self._delivered
        )

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.dispatcher.close()

    # -- one evaluation --------------------------------------------------------------

    def values(self, now: datetime) -> tuple[dict[str, float | None], dict[str, str]]:
        """Each rule's metric over its window ending at ``now``; a metric that fails is
        no data for this evaluation (its error is returned and logged)."""
        from conveyor.errors import ConveyorError
        from conveyor.monitoring.alerts.metrics import metric_value

        values: dict[str, float | None] = {}
        errors: dict[str, str] = {}
        cache: dict[Any, Any] = {}  # one system query per model and window
        for rule in self.rules:
            since = now - timedelta(seconds=rule.window)
            try:
                values[rule.name] = metric_value(
                    self.project, rule.metric, rule.model, since, now, cache=cache
                )
            except ConveyorError as exc:
                values[rule.name] = None
                errors[rule.name] = exc.message
                log.warning("alert rule %s: %s", rule.name, exc.message)
            except Exception as exc:  # one monitor's bug must not stop the other rules
                values[rule.name] = None
                errors[rule.name] = f"{type(exc).__name__}: {exc}"
                log.exception("alert rule %s: its metric %s failed", rule.name, rule.metric)
        return values, errors

    def evaluate(
        self, now: datetime | None = None, values: Mapping[str, float | None] | None = None
    ) -> EvaluationResult:
        """Evaluate every rule at ``now`` (default: now); ``values`` overrides the
        monitors (a test, ``conveyor alerts test``)."""
        now = now or datetime.now(UTC)
        errors: dict[str, str] = {}
        if values is None:
            values, errors = self.values(now)
        decided = self.engine.evaluate(now, values)
        result = EvaluationResult(
            now,
            dict(values),
            errors,
            decided.notifications,
            decided.fired,
            decided.resolved,
        )
        by_name = {r.name: r for r in self.rules}
        for incident in decided.fired:
            self._fired_event(incident)
            rule = by_name.get(incident.rule)
            if rule is not None and incident.suppressed is None:
                for action in rule.actions:
                    result.actions.append(self.act(incident, action))
        for incident in decided.resolved:
            self._resolved_event(incident)
        for notification in decided.notifications:
            self.dispatcher.submit(notification)
        return result

    def send_test(self, *, severity: str = "info", now: datetime | None = None) -> Notification:
        """A test notification to every sink (``conveyor alerts test``); not an incident."""
        from conveyor.monitoring.alerts.engine import Incident, Notification

        now = now or datetime.now(UTC)
        probe = Incident(
            id=f"test-{uuid.uuid4().hex[:11]}",
            fingerprint="test",
            rule="test",
            metric="test",
            model=None,
            severity=severity,
            op=">",
            threshold=0.0,
            labels={"alertname": "test", "severity": severity},
            state="firing",
            started_at=now,
            value=1.0,
            fired_at=now,
        )
        note = Notification("test", "test", (probe,), now, self.project.spec.project)
        self.dispatcher.submit(note)
        return note

    # -- actions --------------------------------------------------------------------

    def act(self, incident: Incident, action: ActionSpec) -> dict[str, Any]:
        """Run one action of a firing incident; its ``alert.action`` event either way."""
        from conveyor.errors import ConveyorError
        from conveyor.monitoring.alerts.events import ALERT_ACTION, ALERT_RETRAIN_REQUESTED

        model = action.model or incident.model
        detail: dict[str, Any] = {"model": model}
        error: str | None = None
        try:
            if model is None:
                raise _NoModel(f"the {action.kind} action needs a model (the rule has none)")
            if action.kind == "retrain":
                self.project.events.record(
                    ALERT_RETRAIN_REQUESTED,
                    subject=model,
                    payload={
                        "alert_id": incident.id,
                        "rule": incident.rule,
                        "metric": incident.metric,
                        "note": action.note,
                    },
                    actor=ACTOR,
                )
                detail["pipeline"] = f"retrain.{model}"
            elif action.kind == "rollback":
                from conveyor.serving.route_store import RouteStore

                routes = RouteStore(self.project.store, self.project.events, self.project.registry)
                state = routes.rollback(
                    model,
                    actor=ACTOR,
                    reason=f"alert {incident.id}: {incident.summary()}",
                )
                detail["revision"] = state.revision
            else:
                detail["review_id"] = self.store.open_review(incident.id, model, action.note)
        except (ConveyorError, _NoModel) as exc:
            error = getattr(exc, "message", str(exc))
            log.error("alert %s: the %s action failed: %s", incident.id, action.kind, error)
        self.project.events.record(
            ALERT_ACTION,
            subject=model,
            payload={
                "alert_id": incident.id,
                "rule": incident.rule,
                "action": action.kind,
                "ok": error is None,
                "detail": detail,
                "error": error,
            },
            actor=ACTOR,
        )
        return {
            "alert_id": incident.id,
            "action": action.kind,
            "ok": error is None,
            "detail": detail,
            "error": error,
        }

    # -- events -----------------------------------------------------------------------

    def _fired_event(self, incident: Incident) -> None:
        from conveyor.monitoring.alerts.events import ALERT_FIRED

        self.project.events.record(
            ALERT_FIRED,
            subject=incident.model,
            payload={
                "alert_id": incident.id,
                "rule": incident.rule,
                "metric": incident.metric,
                "severity": incident.severity,
                "op": incident.op,
                "threshold": incident.threshold,
                "value": incident.value,
                "labels": dict(incident.labels),
                "suppressed": incident.suppressed,
            },
            actor=ACTOR,
        )

    def _resolved_event(self, incident: Incident) -> None:
        from conveyor.monitoring.alerts.events import ALERT_RESOLVED

        fired = incident.fired_at or incident.started_at
        ended = incident.resolved_at or fired
        self.project.events.record(
            ALERT_RESOLVED,
            subject=incident.model,
            payload={
                "alert_id": incident.id,
                "rule": incident.rule,
                "metric": incident.metric,
                "severity": incident.severity,
                "value": incident.value,
                "count": incident.count,
                "flaps": incident.flaps,
                "firing_s": (ended - fired).total_seconds(),
                "notified": incident.notified_at is not None,
            },
            actor=ACTOR,
        )

    def _delivered(self, delivery: Delivery, status: SinkStatus) -> None:
        from conveyor.monitoring.alerts.events import ALERT_DELIVERY_FAILED

        self.store.record_delivery(delivery, status)
        if not delivery.ok:
            self.project.events.record(
                ALERT_DELIVERY_FAILED,
                payload={
                    "sink": delivery.sink,
                    "kind": delivery.kind,
                    "alert_ids": list(delivery.alert_ids),
                    "attempts": delivery.attempts,
                    "error": delivery.error or "failed",
                },
                actor=ACTOR,
            )


class _NoModel(Exception):
    pass


class AlertLoop:
    """``conveyor serve``'s background evaluation: every ``evaluation_interval_s``, by the
    lease holder only. Metric queries and deliveries run off the event loop."""

    def __init__(self, project: Project, settings: AlertsSpec | None = None) -> None:
        from conveyor.monitoring.alerts.rules import alerts_of

        self.project = project
        self.settings = settings if settings is not None else alerts_of(project.spec)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._task: asyncio.Task[None] | None = None
        self._evaluator: Evaluator | None = None
        self.evaluations = 0

    async def start(self) -> None:
        if not self.settings.enabled or self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="conveyor-alerts")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._evaluator is not None:
            await asyncio.to_thread(self._evaluator.close)

    async def _run(self) -> None:
        interval = float(self.settings.evaluation_interval_s)
        while True:
            # the first evaluation one interval after start: a server (or a test's) that
            # lives a few seconds queries nothing
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.tick)
            except asyncio.CancelledError:
                raise
            except Exception:  # an evaluation that fails must not stop the next
                log.exception("alert evaluation failed")

    def tick(self, now: datetime | None = None) -> EvaluationResult | None:
        """One evaluation if this process holds the lease; None otherwise."""
        from conveyor.monitoring.alerts.store import take_lease

        now = now or datetime.now(UTC)
        ttl = 3 * float(self.settings.evaluation_interval_s)
        if not take_lease(self.project.store, self.holder, ttl, now):
            return None
        if self._evaluator is None:
            self._evaluator = Evaluator(self.project, settings=self.settings)
        self.evaluations += 1
        return self._evaluator.evaluate(now)
