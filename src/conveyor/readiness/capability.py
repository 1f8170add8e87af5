"""The readiness report as a capability."""

from conveyor.capability import Capability

CAPABILITY = Capability(
    "readiness",
    "the production readiness report: quality, latency, availability, security, compliance",
    requires=("data", "governance", "monitoring", "registry", "serving"),
)
