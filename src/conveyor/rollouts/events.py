"""The event kinds the rollout controller writes (all audit: each is a decision)."""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import OPTIONAL_STR

__all__ = [
    "ROLLOUT_ABORTED",
    "ROLLOUT_EVENTS",
    "ROLLOUT_EXTENDED",
    "ROLLOUT_PAUSED",
    "ROLLOUT_PROMOTED",
    "ROLLOUT_RESUMED",
    "ROLLOUT_ROLLED_BACK",
    "ROLLOUT_STARTED",
    "ROLLOUT_STEP_PASSED",
    "ROLLOUT_STEP_STARTED",
]

_BASE = {"rollout_id": str, "candidate": int, "stable": int, "step": int, "label": str}

ROLLOUT_STARTED = EventKind(
    "rollout.started",
    "audit",
    {**_BASE, "steps": list, "interval": str, "forced": bool, "force_reason": OPTIONAL_STR},
    "a rollout of a candidate version began (its plan; forced past failed gates, and why)",
)
ROLLOUT_STEP_STARTED = EventKind(
    "rollout.step_started",
    "audit",
    {**_BASE, "route_revision": int},
    "the controller moved the route to a step's weights (or shadow, or flag rules)",
)
ROLLOUT_STEP_PASSED = EventKind(
    "rollout.step_passed",
    "audit",
    {**_BASE, "report_id": str},
    "a step's analysis passed; the saved report",
)
ROLLOUT_EXTENDED = EventKind(
    "rollout.step_extended",
    "audit",
    {**_BASE, "extensions": int, "requests": int},
    "a step had too little traffic to judge and was extended by one interval",
)
ROLLOUT_ROLLED_BACK = EventKind(
    "rollout.rolled_back",
    "audit",
    {**_BASE, "report_id": OPTIONAL_STR, "reason": str, "failed": list},
    "a step failed (or traffic never came): the route went back to stable 100 %",
)
ROLLOUT_PROMOTED = EventKind(
    "rollout.promoted",
    "audit",
    {**_BASE, "alias": str, "forced": bool},
    "the candidate took 100 % and its alias was promoted through the gates record",
)
ROLLOUT_PAUSED = EventKind("rollout.paused", "audit", _BASE, "a rollout was paused")
ROLLOUT_RESUMED = EventKind("rollout.resumed", "audit", _BASE, "a paused rollout resumed")
ROLLOUT_ABORTED = EventKind(
    "rollout.aborted",
    "audit",
    {**_BASE, "reason": OPTIONAL_STR},
    "a rollout was aborted by hand: the route went back to stable 100 %",
)

ROLLOUT_EVENTS = (
    ROLLOUT_STARTED,
    ROLLOUT_STEP_STARTED,
    ROLLOUT_STEP_PASSED,
    ROLLOUT_EXTENDED,
    ROLLOUT_ROLLED_BACK,
    ROLLOUT_PROMOTED,
    ROLLOUT_PAUSED,
    ROLLOUT_RESUMED,
    ROLLOUT_ABORTED,
)
