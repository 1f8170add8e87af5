"""Pipelines as a capability: the schedules table, the ``pipeline`` commands, their action."""

from conveyor.capability import Capability, Command, Tables
from conveyor.pipelines.events import PIPELINE_EVENTS

CAPABILITY = Capability(
    "pipelines",
    "task graphs with retries, timeouts, schedules and triggers",
    requires=("data",),
    tables=Tables(
        "conveyor.pipelines:migrations",
        "conveyor.pipelines.tables",
        "conveyor_pipelines_version",
        "0001",
    ),
    cli=(Command("conveyor.cli.pipeline:pipeline_app", "pipeline"),),
    events=PIPELINE_EVENTS,
    actions={"pipelines.run": "deployer"},
)
