"""Deployment as a capability: environments promoted into, images, charts, smoke tests."""

from conveyor.capability import Capability, Command
from conveyor.deploy.events import DEPLOY_EVENTS

CAPABILITY = Capability(
    "deploy",
    "from a laptop to a cluster: the image recipe, the Helm chart, smoke tests, promotion "
    "between environments, CI/CD templates",
    # registry: versions promoted; serving: routes and health the chart probes; rollouts:
    # the controller CI/CD hands production to; monitoring: ServiceMonitor, PrometheusRule;
    # training: the hold-out the golden smoke requests are recorded from
    requires=("governance", "monitoring", "registry", "rollouts", "serving", "training"),
    settings="conveyor.deploy.settings:SECTIONS",
    services={"kubernetes": "conveyor.deploy.kubernetes:Kubernetes.for_project"},
    cli=(
        Command("conveyor.deploy.cli:app"),  # conveyor promote
        Command("conveyor.deploy.cli:smoke_app", "smoke"),
        Command("conveyor.deploy.build_cli:app"),  # conveyor build
        Command("conveyor.deploy.ci_cli:ci_app", "ci"),
    ),
    events=DEPLOY_EVENTS,
    actions={
        "deploy.promote": "deployer",  # a version copied into the next environment
        "deploy.apply": "deployer",  # the chart applied to a cluster
        # a smoke test asks the server for predictions and keeps its report and event
        "deploy.smoke": "predictor",
    },
)
