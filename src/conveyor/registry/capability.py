"""The model registry as a capability: its tables, the ``models`` commands and actions."""

from conveyor.capability import Capability, Command, Tables
from conveyor.registry.events import REGISTRY_EVENTS

CAPABILITY = Capability(
    "registry",
    "model versions with signatures and lineage, aliases moved through gates",
    requires=("data",),
    tables=Tables(
        "conveyor.registry:migrations",
        "conveyor.registry.tables",
        "conveyor_registry_version",
        "0001",
    ),
    services={"registry": "conveyor.registry.registry:Registry.for_project"},
    cli=(Command("conveyor.cli.models:models_app", "models"),),
    events=REGISTRY_EVENTS,
    actions={"models.read": "viewer", "models.register": "deployer", "models.promote": "deployer"},
)
