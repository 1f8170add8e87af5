"""The readiness report as a capability."""

from conveyor.capability import Capability, Command
from conveyor.readiness.events import READINESS_EVENTS

CAPABILITY = Capability(
    "readiness",
    "the production readiness report: quality, latency, availability, security, compliance",
    requires=("data", "governance", "monitoring", "registry", "serving"),
    settings="conveyor.readiness.settings:SECTIONS",
    cli=(Command("conveyor.readiness.cli:readiness_command", "readiness"),),
    routes="conveyor.readiness.http:routes",
    events=READINESS_EVENTS,
    actions={
        # computes and saves a report, records readiness.reported
        "readiness.read": "viewer",
        # the built-in load test sends traffic at the target rate to the server
        "readiness.load_test": "deployer",
    },
)
