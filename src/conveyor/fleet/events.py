"""The event kinds the serving fleet writes (declared in its capability)."""

from __future__ import annotations

from conveyor.capability import EventKind

__all__ = ["FLEET_CONFIGURED", "FLEET_EVENTS"]

FLEET_CONFIGURED = EventKind(
    "fleet.configured",
    "audit",
    {"balancer": str, "servers": int},
    "a load balancer configuration for the serving fleet was written",
)

FLEET_EVENTS = (FLEET_CONFIGURED,)
