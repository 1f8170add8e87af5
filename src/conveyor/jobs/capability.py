"""The async prediction queue as a capability."""

from conveyor.capability import Capability, Command
from conveyor.jobs.events import JOBS_EVENTS

CAPABILITY = Capability(
    "jobs",
    "asynchronous predictions: requests queued on JetStream, scored by workers, "
    "results by poll or signed webhook",
    # serving: the server's Server (routes, loader, prediction events) scores jobs too;
    # registry: the versions; governance: who may read a job
    requires=("governance", "registry", "serving"),
    settings="conveyor.jobs.settings:SECTIONS",
    cli=(Command("conveyor.jobs.cli:jobs_app", "jobs"),),
    routes="conveyor.jobs.http:routes",
    events=JOBS_EVENTS,
    actions={
        # submitting is predicting (serving.predict, predictor); these are the rest
        "jobs.submit": "predictor",
        "jobs.read": "predictor",  # one's own jobs (the submitting key)
        "jobs.read_any": "admin",  # anyone's
        "jobs.status": "viewer",  # queue depth and workers
        "jobs.work": "deployer",  # run a worker: scores with the deployed routes
    },
)
