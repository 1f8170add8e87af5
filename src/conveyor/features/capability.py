"""The feature store as a capability: its spec section, table, service and commands."""

from conveyor.backends import KV_BACKENDS, Seam
from conveyor.capability import Capability, Command, Tables
from conveyor.features.events import FEATURE_EVENTS

#: The online store: the latest feature values per entity, over any key-value backend.
ONLINE = Seam(
    "online",
    "online feature store (latest values per entity)",
    KV_BACKENDS,
    default="sqlite:///.conveyor/online.db",
)

CAPABILITY = Capability(
    "features",
    "the feature store: definitions, point-in-time training frames, online serving",
    # pipelines: scheduled materialization; registry and serving: the enricher that serves
    # a version trained on a feature service by entity key.
    requires=("data", "governance", "pipelines", "registry", "serving"),
    settings="conveyor.features.settings:SECTIONS",
    tables=Tables(
        "conveyor.features:migrations",
        "conveyor.features.tables",
        "conveyor_features_version",
    ),
    seams=(ONLINE,),
    services={"features": "conveyor.features.definitions:FeatureDefinitions.for_project"},
    cli=(Command("conveyor.features.cli:features_app", "features"),),
    routes="conveyor.features.enrich:routes",  # the HTTP routes and the serving enricher
    events=FEATURE_EVENTS,
    actions={
        "features.apply": "deployer",  # a new version of the definitions
        "features.materialize": "deployer",  # writes the online store
        "features.push": "deployer",  # writes rows online and to the offline log
        "features.check": "deployer",  # parity: a saved report
        "features.read": "viewer",
    },
)
