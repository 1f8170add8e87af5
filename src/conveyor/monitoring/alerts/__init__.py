"""Alerts: rules over the monitors, their states (pending, firing, resolved), silences,
inhibition, notification sinks and actions. See ``docs/monitoring.md`` (Alerts).

Importing this package imports nothing heavy; see :mod:`.rules`, :mod:`.engine`,
:mod:`.sinks`, :mod:`.delivery`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.monitoring.alerts.rules import AlertRule, derive_rules

__all__ = ["AlertRule", "derive_rules"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from conveyor.monitoring.alerts import rules

        return getattr(rules, name)
    raise AttributeError(f"module 'conveyor.monitoring.alerts' has no attribute {name!r}")
