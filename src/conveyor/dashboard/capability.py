"""The dashboard as a capability."""

from conveyor.capability import Capability
from conveyor.dashboard.events import DASHBOARD_EVENTS

CAPABILITY = Capability(
    "dashboard",
    "the web dashboard at /ui: models, routes, rollouts, monitors, drift, alerts, experiments",
    requires=(
        "experiments",
        "governance",
        "monitoring",
        "readiness",
        "registry",
        "rollouts",
        "serving",
    ),
    routes="conveyor.dashboard.http:routes",
    events=DASHBOARD_EVENTS,
    actions={
        # look at every page; each button needs its API action's role (serving.rollback,
        # rollouts.manage, alerts.manage)
        "dashboard.view": "viewer",
    },
)
