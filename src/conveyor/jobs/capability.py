"""The async prediction queue as a capability."""

from conveyor.capability import Capability
from conveyor.jobs.events import JOBS_EVENTS

CAPABILITY = Capability(
    "jobs",
    "asynchronous predictions: requests queued on JetStream, scored by workers, "
    "results by poll or signed webhook",
    requires=("governance", "registry", "serving"),
    events=JOBS_EVENTS,
)
