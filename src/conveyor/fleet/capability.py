"""The serving fleet as a capability."""

from conveyor.capability import Capability
from conveyor.fleet.events import FLEET_EVENTS

CAPABILITY = Capability(
    "fleet",
    "a serving fleet: N servers behind nginx or HAProxy, route changes pushed by LISTEN/NOTIFY",
    requires=("governance", "serving"),
    events=FLEET_EVENTS,
)
