"""The event kinds the model registry writes (declared in its capability, see
:mod:`conveyor.events.catalogue`): both are audit, committed before the call returns."""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import OPTIONAL_STR

__all__ = ["MODEL_ALIAS_MOVED", "MODEL_COMPILED", "MODEL_REGISTERED", "REGISTRY_EVENTS"]

MODEL_REGISTERED = EventKind(
    "model.registered",
    "audit",
    {
        "version_id": str,
        "flavor": str,
        "artifact_digest": str,
        "run_id": OPTIONAL_STR,
        "parent_id": OPTIONAL_STR,
        "dataset_version_ids": list,
        "metrics": dict,
    },
    "a model version was registered (subject_version is its number)",
)
MODEL_ALIAS_MOVED = EventKind(
    "model.alias_moved",
    "audit",
    {
        "alias": str,
        "from_version_id": OPTIONAL_STR,
        "to_version_id": OPTIONAL_STR,
        "reason": OPTIONAL_STR,
        "forced": bool,
        "rollback": bool,
    },
    "an alias (champion, challenger...) was moved to a version, or rolled back",
)

MODEL_COMPILED = EventKind(
    "model.compiled",
    "audit",
    {"version_id": str, "digest": str, "size": int},
    "a version registered without its formula got it recorded (conveyor models compile)",
)

#: Every kind the registry capability declares.
REGISTRY_EVENTS: tuple[EventKind, ...] = (MODEL_REGISTERED, MODEL_ALIAS_MOVED, MODEL_COMPILED)
