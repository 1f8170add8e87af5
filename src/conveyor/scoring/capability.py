"""Batch scoring as a capability."""

from conveyor.capability import Capability, Command, Tables
from conveyor.scoring.events import SCORING_EVENTS

CAPABILITY = Capability(
    "scoring",
    "batch and stream scoring: a model version over files, a query, a data set version, "
    "or a NATS JetStream / Redis stream",
    # data: dataset: inputs and the SQL reader; registry: versions, gates; serving: the
    # verified loader; pipelines: scheduled jobs; features: the point-in-time join of a
    # version trained on a feature service
    requires=("data", "features", "governance", "pipelines", "registry", "serving"),
    settings="conveyor.scoring.settings:SECTIONS",
    tables=Tables(
        "conveyor.scoring:migrations",
        "conveyor.scoring.tables",
        "conveyor_scoring_version",
    ),
    cli=(Command("conveyor.scoring.cli:score_app", "score"),),
    events=SCORING_EVENTS,
    actions={
        # writes predictions to a folder or a table, and a run record
        "scoring.batch": "deployer",
        # consumes a stream (its messages acked) and writes scores, dead letters, windows
        "scoring.stream": "deployer",
    },
)
