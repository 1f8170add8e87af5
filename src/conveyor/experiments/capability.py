"""Experiments and feature flags as a capability."""

from conveyor.capability import Capability, Command, Tables
from conveyor.experiments.events import EXPERIMENT_EVENTS

CAPABILITY = Capability(
    "experiments",
    "A-B experiments with sequential statistics, and feature flags on the router",
    # serving: the routes it splits and flags; monitoring: traffic and feedback per arm;
    # registry: arms' versions must exist
    requires=("governance", "monitoring", "registry", "serving"),
    settings="conveyor.experiments.settings:SECTIONS",
    tables=Tables(
        "conveyor.experiments:migrations",
        "conveyor.experiments.tables",
        "conveyor_experiments_version",
    ),
    services={
        "experiments": "conveyor.experiments.service:Experiments.for_project",
        "flags": "conveyor.experiments.flags:Flags.for_project",
    },
    cli=(
        Command("conveyor.experiments.cli:experiment_app", "experiment"),
        Command("conveyor.experiments.cli:flag_app", "flag"),
    ),
    routes="conveyor.experiments.http:routes",
    events=EXPERIMENT_EVENTS,
    actions={
        "experiments.read": "viewer",
        "experiments.manage": "deployer",
        "flags.read": "viewer",
        "flags.manage": "deployer",
    },
)
