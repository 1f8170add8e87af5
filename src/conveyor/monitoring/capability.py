"""Monitoring as a capability: its spec section, tables, service, commands and actions."""

from conveyor.capability import Capability, Command, Tables
from conveyor.monitoring.events import MONITORING_EVENTS

CAPABILITY = Capability(
    "monitoring",
    "monitoring: the event log's columnar copy (Parquet + DuckDB) and monitor queries",
    # pipelines: scheduled compaction; data, registry: live drift against training data;
    # serving: an alert's rollback action rolls a route back
    requires=("data", "governance", "pipelines", "registry", "serving"),
    settings="conveyor.monitoring.settings:SECTIONS",
    tables=Tables(
        "conveyor.monitoring:migrations",
        "conveyor.monitoring.tables",
        "conveyor_monitoring_version",
    ),
    services={"monitoring": "conveyor.monitoring.query:MonitorQuery.for_project"},
    cli=(
        Command("conveyor.monitoring.cli:compact_command", "events compact"),
        Command("conveyor.monitoring.sink_cli:sink_command", "events sink"),
        Command("conveyor.monitoring.cli:monitor_app", "monitor"),
        Command("conveyor.monitoring.feedback_cli:feedback_app", "feedback"),
        Command("conveyor.monitoring.alerts.cli:alerts_app", "alerts"),
    ),
    routes="conveyor.monitoring.http:routes",
    events=MONITORING_EVENTS,
    actions={
        "monitoring.compact": "deployer",  # writes the columnar copy and its checkpoint
        "monitoring.read": "viewer",
        # records a drift report and drift.detected, which can start a retraining
        "monitoring.drift": "deployer",
        # writes ground truth (feedback events) for predictions: whoever may predict
        "monitoring.feedback": "predictor",
        "alerts.read": "viewer",
        # acknowledge alerts, add and end silences
        "alerts.manage": "deployer",
        # a test notification to every sink
        "alerts.test": "deployer",
        # one evaluation now: notifies, writes alert.* events and runs the rules' actions
        "alerts.evaluate": "deployer",
    },
)
