"""Rollouts as a capability: the controller's state, commands, routes and events."""

from conveyor.capability import Capability, Command, Tables
from conveyor.rollouts.events import ROLLOUT_EVENTS

CAPABILITY = Capability(
    "rollouts",
    "progressive delivery: a controller that moves a canary step by step, or rolls it back",
    # serving: routes it moves; registry: the alias it promotes; monitoring: the step analysis
    requires=("governance", "monitoring", "registry", "serving"),
    settings="conveyor.rollouts.settings:SECTIONS",
    tables=Tables(
        "conveyor.rollouts:migrations", "conveyor.rollouts.tables", "conveyor_rollouts_version"
    ),
    services={"rollouts": "conveyor.rollouts.controller:Rollouts.for_project"},
    cli=(Command("conveyor.rollouts.cli:rollout_app", "rollout"),),
    routes="conveyor.rollouts.http:routes",
    events=ROLLOUT_EVENTS,
    actions={
        "rollouts.read": "viewer",
        # start, pause, resume, abort, promote, and drive (run) rollouts: they move routes
        "rollouts.manage": "deployer",
    },
)
