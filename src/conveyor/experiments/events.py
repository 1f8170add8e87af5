"""The event kinds the experiments capability writes (all audit: each is a decision)."""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import NUMBER, OPTIONAL_STR

_OPTIONAL_INT = (int, type(None))

__all__ = [
    "EXPERIMENT_CONCLUDED",
    "EXPERIMENT_EVENTS",
    "EXPERIMENT_STARTED",
    "EXPERIMENT_STOPPED",
    "FLAG_CHANGED",
    "FLAG_CREATED",
    "FLAG_DELETED",
    "FLAG_KILLED",
]

_EXP = {"experiment_id": str, "name": str, "arms": dict}

EXPERIMENT_STARTED = EventKind(
    "experiment.started",
    "audit",
    {**_EXP, "primary": str, "guardrails": list, "planned_n": int, "route_revision": int},
    "an A-B experiment began: its arms (label -> version), metrics and planned sample size",
)
EXPERIMENT_STOPPED = EventKind(
    "experiment.stopped",
    "audit",
    {**_EXP, "winner": OPTIONAL_STR, "reason": OPTIONAL_STR, "route_revision": int},
    "an experiment was stopped; the route serves the winner (or the control arm)",
)
EXPERIMENT_CONCLUDED = EventKind(
    "experiment.concluded",
    "audit",
    {**_EXP, "recommendation": str, "reason": str, "report_id": str},
    "an experiment's report reached a recommendation (ship or do not ship)",
)

_FLAG = {"flag": str, "revision": int, "version": int, "match": dict, "percent": NUMBER}

FLAG_CREATED = EventKind(
    "flag.created",
    "audit",
    {**_FLAG, "route_revision": int, "reason": OPTIONAL_STR},
    "a feature flag was created on a model's route",
)
FLAG_CHANGED = EventKind(
    "flag.changed",
    "audit",
    {**_FLAG, "action": str, "route_revision": int, "reason": OPTIONAL_STR, "before": dict},
    "a feature flag was ramped, retargeted or re-enabled",
)
FLAG_KILLED = EventKind(
    "flag.killed",
    "audit",
    {**_FLAG, "route_revision": int, "reason": OPTIONAL_STR},
    "a feature flag's kill switch: its rule left the route in one revision",
)
FLAG_DELETED = EventKind(
    "flag.deleted",
    "audit",
    {**_FLAG, "route_revision": _OPTIONAL_INT, "reason": OPTIONAL_STR},
    "a feature flag was deleted (its history stays)",
)

EXPERIMENT_EVENTS = (
    EXPERIMENT_STARTED,
    EXPERIMENT_STOPPED,
    EXPERIMENT_CONCLUDED,
    FLAG_CREATED,
    FLAG_CHANGED,
    FLAG_KILLED,
    FLAG_DELETED,
)
