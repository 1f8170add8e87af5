"""The event kinds the feature store writes (declared in its capability, see
:mod:`conveyor.events.catalogue`): a new version of a definition, a materialization and
a push are audit (one event per call, never per row)."""

from __future__ import annotations

from conveyor.capability import EventKind

__all__ = ["FEATURES_APPLIED", "FEATURES_MATERIALIZED", "FEATURES_PUSHED", "FEATURE_EVENTS"]

FEATURES_APPLIED = EventKind(
    "features.applied",
    "audit",
    {"created": list, "changed": list, "unchanged": int},
    "conveyor features apply stored new versions of feature definitions",
)

FEATURES_MATERIALIZED = EventKind(
    "features.materialized",
    "audit",
    {"views": list},
    "views were written to the online store: per view its mode, rows read and written, "
    "and the watermark before and after",
)

FEATURES_PUSHED = EventKind(
    "features.pushed",
    "audit",
    {
        "view": str,
        "rows": int,
        "written": int,
        "kept": int,
        "expired": int,
        "logged": bool,
        "artifact": str,
    },
    "rows were pushed to a view: online, and to its offline log (logged false: the same "
    "rows had been pushed before)",
)

FEATURE_EVENTS = (FEATURES_APPLIED, FEATURES_MATERIALIZED, FEATURES_PUSHED)
