"""The dashboard as a capability."""

from conveyor.capability import Capability

CAPABILITY = Capability(
    "dashboard",
    "the web dashboard at /ui: models, routes, rollouts, monitors, drift, alerts, experiments",
    requires=("experiments", "governance", "monitoring", "readiness", "registry", "rollouts", "serving"),
)
