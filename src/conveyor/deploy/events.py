"""The event kinds deployment writes (audit: each changes what runs where)."""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import OPTIONAL_STR

__all__ = ["DEPLOY_APPLIED", "DEPLOY_EVENTS", "DEPLOY_PROMOTED", "DEPLOY_SMOKE"]

DEPLOY_PROMOTED = EventKind(
    "deploy.promoted",
    "audit",
    {
        "model": str,
        "version": int,
        "from_env": str,
        "to_env": str,
        "to_version": int,
        "sha256": str,
        "approver": OPTIONAL_STR,
        "gate_report": OPTIONAL_STR,
    },
    "a model version was copied from one environment's registry into the next one's",
)
DEPLOY_APPLIED = EventKind(
    "deploy.applied",
    "audit",
    {"environment": str, "release": str, "namespace": str, "manifests": int, "image": str},
    "the Helm chart rendered from the spec was applied to a cluster with kubectl",
)
DEPLOY_SMOKE = EventKind(
    "deploy.smoke",
    "audit",
    {"environment": str, "url": str, "passed": bool, "report_id": str},
    "a smoke test of a deployed environment ran: health, metadata, golden requests",
)

DEPLOY_EVENTS = (DEPLOY_PROMOTED, DEPLOY_APPLIED, DEPLOY_SMOKE)
