"""The serving fleet as a capability."""

from conveyor.capability import Capability, Command
from conveyor.fleet.events import FLEET_EVENTS

CAPABILITY = Capability(
    "fleet",
    "a serving fleet: N servers behind nginx or HAProxy, route changes pushed by LISTEN/NOTIFY",
    requires=("governance", "serving"),
    settings="conveyor.fleet.settings:SECTIONS",
    cli=(Command("conveyor.fleet.cli:fleet_app", "fleet"),),
    events=FLEET_EVENTS,
    actions={"fleet.manage": "deployer"},
)
