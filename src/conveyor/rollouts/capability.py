"""Rollouts as a capability: the controller's state, commands, routes and events."""

from conveyor.capability import Capability

CAPABILITY = Capability(
    "rollouts",
    "progressive delivery: a controller that moves a canary step by step, or rolls it back",
    # serving: routes it moves; registry: the alias it promotes; monitoring: the step analysis
    requires=("governance", "monitoring", "registry", "serving"),
)
