"""Alerts: rules over the monitors, their states (pending, firing, resolved), silences,
inhibition, notification sinks and actions. See ``docs/monitoring.md`` (Alerts)::

    from conveyor.monitoring.alerts import Evaluator, derive_rules

    derive_rules(project.spec)               # the rules: from slos: and the spec
    with Evaluator(project) as alerts:
        alerts.evaluate()                    # one evaluation: events, notifications, actions

Importing this package imports nothing heavy: its names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.monitoring.alerts.engine import Engine, Incident, MemoryStore, Silence
    from conveyor.monitoring.alerts.evaluator import Evaluator
    from conveyor.monitoring.alerts.metrics import register_metric
    from conveyor.monitoring.alerts.rules import AlertRule, derive_rules

__all__ = [
    "AlertRule",
    "Engine",
    "Evaluator",
    "Incident",
    "MemoryStore",
    "Silence",
    "derive_rules",
    "register_metric",
]

_LAZY = {
    "AlertRule": "rules",
    "derive_rules": "rules",
    "Engine": "engine",
    "Incident": "engine",
    "MemoryStore": "engine",
    "Silence": "engine",
    "Evaluator": "evaluator",
    "register_metric": "metrics",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor.monitoring.alerts' has no attribute {name!r}")
    return getattr(importlib.import_module(f"conveyor.monitoring.alerts.{module}"), name)
