"""The data layer as a capability: its spec sections, tables, commands and events."""

from conveyor.capability import Capability, Command, Tables
from conveyor.data.events import DATA_EVENTS

CAPABILITY = Capability(
    "data",
    "validated data pipelines: sources, checks with quarantine, versions, lineage, drift",
    settings="conveyor.data.settings:SECTIONS",
    tables=Tables(
        "conveyor.data:migrations", "conveyor.data.tables", "conveyor_data_version", "0001"
    ),
    services={"data": "conveyor.data.layer:DataLayer.for_project"},
    cli=(Command("conveyor.cli.data:data_app", "data"),),
    events=DATA_EVENTS,
    actions={
        "data.ingest": "deployer",  # a new version, or quarantined rows replayed into one
        "data.check": "deployer",  # drift between versions (may trigger a retraining)
        "data.forget": "admin",  # irreversible: a data subject removed everywhere
        "data.rotate_key": "admin",
        "data.quarantine": "admin",  # discard a quarantined batch
        "data.reveal": "admin",  # decrypt sensitive columns of quarantined rows
    },
)
