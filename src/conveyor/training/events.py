"""The event kinds the training flow writes (declared in its capability, see
:mod:`conveyor.events.catalogue`).

A run's own events (``run.started``, ``run.metric``, ``run.finished``) are the
foundation's; the data a training reads is recorded as the data capability's
``data.read``.
"""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import NUMBER, OPTIONAL_NUMBER, OPTIONAL_STR

__all__ = ["MODEL_CANDIDATE", "MODEL_OPTIMIZED", "MODEL_VALIDATED", "TRAINING_EVENTS"]

MODEL_VALIDATED = EventKind(
    "model.validated",
    "control",
    {
        "report": str,
        "verdict": str,
        "failed": list,
        "warnings": list,
        "run": OPTIONAL_STR,
        "dataset": str,
    },
    "a version's gates were run and their report saved (verdict and failed gates)",
    optional=frozenset({"warnings", "run", "dataset"}),
)
MODEL_CANDIDATE = EventKind(
    "model.candidate",
    "audit",
    {
        "version": str,
        "version_id": str,
        "run": str,
        "incremental": bool,
        "report": str,
        "verdict": str,
        "failed": list,
        "metrics": dict,
        "challenger": bool,
        "champion": bool,
        "trigger": str,
    },
    "a training produced a version: its gate verdict and the aliases it moved",
)
MODEL_OPTIMIZED = EventKind(
    "model.optimized",
    "audit",
    {
        "parent_id": str,
        "version_id": str,
        "optimization": str,
        "report": str,
        "size_ratio": NUMBER,
        "metric_difference": OPTIONAL_NUMBER,
    },
    "an optimized version (quantized, pruned...) was registered from a parent, with its report",
)

#: Every kind the training capability declares.
TRAINING_EVENTS: tuple[EventKind, ...] = (MODEL_VALIDATED, MODEL_CANDIDATE, MODEL_OPTIMIZED)
