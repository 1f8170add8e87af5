"""The model server as a capability: the ``serving:`` section, routes, commands, actions."""

from conveyor.capability import Capability, Command, Tables
from conveyor.serving.events import SERVING_EVENTS

CAPABILITY = Capability(
    "serving",
    "the model server: routing, batching, caching, native and Open Inference Protocol v2",
    requires=("registry", "governance"),
    settings="conveyor.serving.settings:SECTIONS",
    tables=Tables(
        "conveyor.serving:migrations", "conveyor.serving.tables", "conveyor_serving_version", "0001"
    ),
    cli=(Command("conveyor.cli.serving:serving_app"),),
    routes="conveyor.serving.http:routes",
    events=SERVING_EVENTS,
    actions={
        "serving.read": "viewer",
        "serving.predict": "predictor",
        "serving.predict_unrouted": "deployer",
        "serving.deploy": "deployer",
        "serving.route": "deployer",
        "serving.rollback": "deployer",
    },
)
