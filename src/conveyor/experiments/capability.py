"""Experiments and feature flags as a capability."""

from conveyor.capability import Capability

CAPABILITY = Capability(
    "experiments",
    "A-B experiments with sequential statistics, and feature flags on the router",
    requires=("governance", "monitoring", "registry", "serving"),
)
