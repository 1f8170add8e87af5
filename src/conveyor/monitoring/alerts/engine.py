"""The alert engine: rules evaluated on a clock, incidents, silences, inhibition.

::

    engine = Engine(rules, settings, MemoryStore())
    notes = engine.evaluate(now, values)       # values: rule name -> metric value (or None)

Each rule and model is one *alert* (its ``fingerprint``). An evaluation compares the
rule's metric with its threshold:

- clear -> breached: the alert is **pending** (an incident is opened, not notified);
- breached for ``for_s``: **firing**; its notification is sent once, unless the alert
  is silenced, inhibited, or within ``cooldown`` of the same alert's last incident
  (recorded with the reason; a silence or inhibition that ends while the incident still
  fires lets its notification go then);
- still breached: the incident counts the evaluation (``count``), and, unacknowledged,
  is notified again every ``repeat_interval``;
- clear for ``resolve_after``: **resolved**, notified if its firing was. A breach in that
  time is a flap of the same incident (``flaps``), never a second notification.

No data (``None``: no request in the window) changes nothing but a pending alert, which
falls back to clear. Notifications of one evaluation are grouped by rule and kind: one
message per group and sink, listing its alerts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from conveyor.monitoring.alerts.rules import AlertRule
    from conveyor.monitoring.alerts.settings import AlertsSpec

__all__ = [
    "Engine",
    "Evaluation",
    "Incident",
    "MemoryStore",
    "Notification",
    "Silence",
    "Store",
    "fingerprint",
    "matches",
]

State = Literal["pending", "firing", "resolved"]
Kind = Literal["firing", "resolved", "repeat", "test"]


def fingerprint(rule_name: str, model: str | None) -> str:
    return rule_name if model is None else f"{rule_name}|{model}"


@dataclass(slots=True)
class Incident:
    """One alert's incident, from pending to resolved."""

    id: str
    fingerprint: str
    rule: str
    metric: str
    model: str | None
    severity: str
    op: str
    threshold: float
    labels: dict[str, str]
    state: State
    started_at: datetime  # first breached evaluation (pending since)
    value: float | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    clear_since: datetime | None = None
    count: int = 1  # breached evaluations folded into the incident
    flaps: int = 0  # breaches after a clear evaluation, within resolve_after
    notified_at: datetime | None = None  # firing notification sent (or last repeat)
    notifications: int = 0
    suppressed: str | None = None  # silenced:<id> | inhibited:<fingerprint> | cooldown
    acked_by: str | None = None
    acked_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out

    def summary(self) -> str:
        scope = f" ({self.model})" if self.model else ""
        shown = "no data" if self.value is None else f"{self.value:.4g}"
        return f"{self.rule}{scope}: {self.metric} {shown} {self.op} {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class Silence:
    """Notifications of alerts whose labels match every matcher are held until ``ends_at``."""

    id: str
    matchers: Mapping[str, str]
    ends_at: datetime
    starts_at: datetime
    created_by: str | None = None
    comment: str | None = None

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": dict(self.matchers),
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "created_by": self.created_by,
            "comment": self.comment,
        }


def matches(matchers: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every matcher equal to its label (a value ending in ``*`` matches a prefix)."""
    for key, want in matchers.items():
        got = labels.get(key)
        if got is None:
            return False
        if want.endswith("*") and got.startswith(want[:-1]):
            continue
        if got != want:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to the sinks: a group's alerts of one kind."""

    kind: Kind
    group: str
    alerts: tuple[Incident, ...]
    at: datetime
    project: str = ""

    @property
    def count(self) -> int:
        return sum(a.count for a in self.alerts)

    @property
    def severity(self) -> str:
        order = {"page": 0, "ticket": 1, "info": 2}
        return min((a.severity for a in self.alerts), key=lambda s: order.get(s, 3))

    def title(self) -> str:
        what = {"firing": "FIRING", "resolved": "RESOLVED", "repeat": "STILL FIRING"}
        head = what.get(self.kind, self.kind.upper())
        return f"[{head}] {self.group} ({len(self.alerts)} alert(s), {self.count} evaluations)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "project": self.project,
            "status": "resolved" if self.kind == "resolved" else "firing",
            "kind": self.kind,
            "group": self.group,
            "severity": self.severity,
            "count": self.count,
            "at": self.at.isoformat(),
            "title": self.title(),
            "alerts": [a.to_dict() for a in self.alerts],
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one evaluation decided."""

    notifications: list[Notification]
    fired: list[Incident]
    resolved: list[Incident]


class Store(Protocol):
    """Where incidents and silences are kept (:class:`MemoryStore`; the metadata store's
    tables, :class:`conveyor.monitoring.alerts.store.SqlStore`)."""

    def open_incidents(self) -> dict[str, Incident]: ...
    def last_resolved(self, fingerprint: str) -> Incident | None: ...
    def save(self, incidents: Iterable[Incident], dropped: Iterable[str]) -> None: ...
    def silences(self, now: datetime) -> list[Silence]: ...


class MemoryStore:
    """Incidents and silences in memory (the engine's tests, simulations)."""

    def __init__(self) -> None:
        self.incidents: dict[str, Incident] = {}
        self.silence_list: list[Silence] = []

    def open_incidents(self) -> dict[str, Incident]:
        return {
            i.fingerprint: replace(i)
            for i in self.incidents.values()
            if i.state in ("pending", "firing")
        }

    def last_resolved(self, fingerprint: str) -> Incident | None:
        done = [
            i
            for i in self.incidents.values()
            if i.fingerprint == fingerprint and i.state == "resolved"
        ]
        return max(done, key=lambda i: i.resolved_at or i.started_at) if done else None

    def save(self, incidents: Iterable[Incident], dropped: Iterable[str]) -> None:
        for incident in incidents:
            self.incidents[incident.id] = replace(incident)
        for gone in dropped:
            self.incidents.pop(gone, None)

    def silences(self, now: datetime) -> list[Silence]:
        return [s for s in self.silence_list if s.active(now)]


@dataclass
class Engine:
    """Evaluates rules against metric values and says what to notify."""

    rules: list[AlertRule]
    settings: AlertsSpec
    store: Store
    project: str = ""
    new_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex[:16])

    def __post_init__(self) -> None:
        self._resolve_after = timedelta(seconds=self.settings.seconds("resolve_after"))
        self._cooldown = timedelta(seconds=self.settings.seconds("cooldown"))
        self._repeat = timedelta(seconds=self.settings.seconds("repeat_interval"))

    def evaluate(self, now: datetime, values: Mapping[str, float | None]) -> Evaluation:
        """One evaluation at ``now`` with each rule's value (by rule name; missing: no
        data): the notifications to send, the incidents that began firing (their
        ``alert.fired`` event and actions, once) and those that resolved."""
        open_ = self.store.open_incidents()
        changed: dict[str, Incident] = {}
        dropped: list[str] = []
        sends: list[tuple[Kind, Incident]] = []
        newly_firing: list[Incident] = []
        resolved: list[Incident] = []
        for rule in self.rules:
            key = fingerprint(rule.name, rule.model)
            value = values.get(rule.name)
            incident = open_.get(key)
            if value is None:
                if incident is not None and incident.state == "pending":
                    dropped.append(incident.id)
                    del open_[key]
                continue
            breached = rule.breached(value)
            if incident is None:
                if not breached:
                    continue
                incident = self._open(rule, key, now, value)
                open_[key] = incident
            else:
                incident.value = value
            changed[key] = incident
            if breached:
                self._breached(rule, incident, now, newly_firing)
            elif incident.state == "pending":
                dropped.append(incident.id)
                del open_[key]
                del changed[key]
            else:  # firing, clear now
                if incident.clear_since is None:
                    incident.clear_since = now
                if now - incident.clear_since >= self._resolve_after:
                    incident.state = "resolved"
                    incident.resolved_at = now
                    resolved.append(incident)
                    if incident.notified_at is not None:
                        sends.append(("resolved", incident))
        # an incident whose rule left the spec ends now (it would otherwise fire for ever)
        ruled = {fingerprint(r.name, r.model) for r in self.rules}
        for key, incident in list(open_.items()):
            if key in ruled:
                continue
            del open_[key]
            if incident.state == "pending":
                dropped.append(incident.id)
                continue
            incident.state = "resolved"
            incident.resolved_at = now
            incident.suppressed = "rule removed"
            changed[key] = incident
            resolved.append(incident)
            if incident.notified_at is not None:
                sends.append(("resolved", incident))
        # what firing incidents may notify: silences, inhibition, repeats
        silences = self.store.silences(now)
        firing = [i for i in open_.values() if i.state == "firing"]
        for incident in firing:
            reason = self._suppressed(incident, silences, firing)
            if reason is None and incident.suppressed == "cooldown":
                reason = "cooldown"  # held for the whole incident
            if reason != incident.suppressed:
                incident.suppressed = reason
                changed[incident.fingerprint] = incident
            if reason is not None or incident.clear_since is not None:
                continue
            if incident.notified_at is None:
                sends.append(("firing", incident))
            elif incident.acked_at is None and now - incident.notified_at >= self._repeat:
                sends.append(("repeat", incident))
            else:
                continue
            changed[incident.fingerprint] = incident
        for kind, incident in sends:
            if kind != "resolved":
                incident.notified_at = now
            incident.notifications += 1
        for incident in changed.values():
            incident.updated_at = now
        self.store.save(changed.values(), dropped)
        return Evaluation(
            self._grouped(sends, now),
            [replace(i) for i in newly_firing],
            [replace(i) for i in resolved],
        )

    def _open(self, rule: AlertRule, key: str, now: datetime, value: float) -> Incident:
        return Incident(
            id=self.new_id(),
            fingerprint=key,
            rule=rule.name,
            metric=rule.metric,
            model=rule.model,
            severity=rule.severity,
            op=rule.op,
            threshold=rule.threshold,
            labels=rule.all_labels,
            state="pending",
            started_at=now,
            value=value,
            count=0,
        )

    def _breached(
        self, rule: AlertRule, incident: Incident, now: datetime, newly_firing: list[Incident]
    ) -> None:
        incident.count += 1
        if incident.clear_since is not None:
            incident.clear_since = None
            incident.flaps += 1
        if incident.state == "pending" and now - incident.started_at >= timedelta(
            seconds=rule.for_s
        ):
            incident.state = "firing"
            incident.fired_at = now
            last = self.store.last_resolved(incident.fingerprint)
            if (
                last is not None
                and last.resolved_at is not None
                and now - last.resolved_at < self._cooldown
            ):
                incident.suppressed = "cooldown"
            newly_firing.append(incident)

    def _suppressed(
        self,
        incident: Incident,
        silences: list[Silence],
        firing: list[Incident],
    ) -> str | None:
        for silence in silences:
            if matches(silence.matchers, incident.labels):
                return f"silenced:{silence.id}"
        for inhibit in self.settings.inhibit:
            if incident.metric not in inhibit.target:
                continue
            for other in firing:
                if (
                    other is not incident
                    and other.metric in inhibit.source
                    and other.clear_since is None
                    and (other.model == incident.model or other.model is None)
                ):
                    return f"inhibited:{other.fingerprint}"
        return None

    def _grouped(self, sends: list[tuple[Kind, Incident]], now: datetime) -> list[Notification]:
        groups: dict[tuple[str, str], list[Incident]] = {}
        for kind, incident in sends:
            group = incident.labels.get("group", incident.rule.split(":")[0])
            groups.setdefault((kind, group), []).append(replace(incident))
        return [
            Notification(kind, group, tuple(alerts), now, self.project)  # type: ignore[arg-type]
            for (kind, group), alerts in groups.items()
        ]
