"""The event kinds the feature store writes (declared in its capability, see
:mod:`conveyor.events.catalogue`): a new version of a definition is audit."""

from __future__ import annotations

from conveyor.capability import EventKind

__all__ = ["FEATURES_APPLIED", "FEATURE_EVENTS"]

FEATURES_APPLIED = EventKind(
    "features.applied",
    "audit",
    {"created": list, "changed": list, "unchanged": int},
    "conveyor features apply stored new versions of feature definitions",
)

FEATURE_EVENTS = (FEATURES_APPLIED,)
