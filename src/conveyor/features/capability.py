"""The feature store as a capability: its spec section, table, service and commands."""

from conveyor.capability import Capability, Command, Tables
from conveyor.features.events import FEATURE_EVENTS

CAPABILITY = Capability(
    "features",
    "the feature store: definitions, point-in-time training frames, online serving",
    requires=("data", "governance"),
    settings="conveyor.features.settings:SECTIONS",
    tables=Tables(
        "conveyor.features:migrations",
        "conveyor.features.tables",
        "conveyor_features_version",
    ),
    services={"features": "conveyor.features.definitions:FeatureDefinitions.for_project"},
    cli=(Command("conveyor.features.cli:features_app", "features"),),
    events=FEATURE_EVENTS,
    actions={
        "features.apply": "deployer",  # a new version of the definitions
        "features.read": "viewer",
    },
)
