"""Batch scoring as a capability."""

from conveyor.capability import Capability

CAPABILITY = Capability(
    "scoring",
    "batch scoring: a model version over files, a SQL query or a data set version, resumable",
    requires=("data", "governance", "pipelines", "registry", "serving"),
)
