"""Deployment as a capability: environments promoted into, images, charts, smoke tests."""

from conveyor.capability import Capability, Command
from conveyor.deploy.events import DEPLOY_EVENTS

CAPABILITY = Capability(
    "deploy",
    "from a laptop to a cluster: the image recipe, the Helm chart, smoke tests, promotion "
    "between environments, CI/CD templates",
    # registry: versions promoted; serving: routes and health the chart probes; rollouts:
    # the controller CI/CD hands production to; monitoring: ServiceMonitor, PrometheusRule
    requires=("governance", "monitoring", "registry", "rollouts", "serving"),
    settings="conveyor.deploy.settings:SECTIONS",
    services={"kubernetes": "conveyor.deploy.kubernetes:Kubernetes.for_project"},
    cli=(
        Command("conveyor.deploy.cli:app"),  # conveyor smoke | promote
        Command("conveyor.deploy.build_cli:app"),  # conveyor build
        Command("conveyor.deploy.ci_cli:ci_app", "ci"),
    ),
    events=DEPLOY_EVENTS,
    actions={
        "deploy.promote": "deployer",  # a version copied into the next environment
        "deploy.apply": "deployer",  # the chart applied to a cluster
    },
)
