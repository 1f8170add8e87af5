"""The event kinds the model server writes (declared in its capability, see
:mod:`conveyor.events.catalogue`).

Predictions are telemetry: writing one never makes a request wait (when the
log is behind it spills, or is shed and counted). Route changes are audit.
"""

from __future__ import annotations

from typing import Any

from conveyor.capability import EventKind
from conveyor.events.catalogue import NUMBER, OPTIONAL_NUMBER, OPTIONAL_STR

__all__ = [
    "PREDICTION",
    "PREDICTION_FAILED",
    "PREDICTION_SHADOW",
    "ROUTE_APPLIED",
    "ROUTE_DELETED",
    "ROUTE_FAILED",
    "ROUTE_ROLLED_BACK",
    "ROUTE_SET",
    "SERVING_EVENTS",
]

PREDICTION = EventKind(
    "prediction",
    "telemetry",
    {
        "version_id": str,
        "arm": str,
        "flag": OPTIONAL_STR,
        "latency_ms": NUMBER,
        "cached": bool,
        "rows": int,
        "output": Any,  # the model's own output, made JSON-ready
        "input_digest": str,
        "input": list,  # the request's rows, when sampled (serving.payload_sample_rate)
        # What an enricher looked up (the feature store: values used, missing, expired).
        "features": dict,
    },
    "a request was answered: by which version and arm, how fast, and the output",
    optional=frozenset({"input_digest", "input", "features"}),
)
PREDICTION_FAILED = EventKind(
    "prediction.failed",
    "telemetry",
    {
        "status": int,  # the HTTP status answered (400, 422, 503...)
        "code": str,  # the error's stable code (invalid_input, overloaded, internal...)
        "version_id": OPTIONAL_STR,  # None: failed before a version was chosen
        "arm": OPTIONAL_STR,
        "latency_ms": NUMBER,
    },
    "a prediction request failed (4xx or 5xx): its status and error code, the version and "
    "arm when one had been chosen, and how long the failure took",
)
PREDICTION_SHADOW = EventKind(
    "prediction.shadow",
    "telemetry",
    {
        "primary_version": int,
        "primary_output": Any,
        "output": Any,
        "agree": bool,  # numbers within a tolerance (serving/shadow.py), others equal
        "compared": int,  # how many numbers were compared
        "differing": int,  # how many of them are outside the tolerance
        "max_abs_diff": OPTIONAL_NUMBER,
        "mean_abs_diff": OPTIONAL_NUMBER,
        "status": str,
        "error": OPTIONAL_STR,
        "latency_ms": NUMBER,
        # The request's rows, only when the shadow disagrees (at most SHADOW_INPUT_ROWS):
        # what the shadow analysis shows beside its largest disagreements.
        "input": list,
    },
    "a shadow version answered a copy of a request (compared with the answer given, "
    "within a tolerance, with the absolute differences)",
    optional=frozenset({"input"}),
)

_ROUTE = {
    "revision": int,
    "old_revision": (int, type(None)),
    "old": (dict, type(None)),
    "new": dict,
    "reason": OPTIONAL_STR,
}

ROUTE_SET = EventKind(
    "route.set", "audit", _ROUTE, "a model's route (versions, weights, shadows, flags) was set"
)
ROUTE_ROLLED_BACK = EventKind(
    "route.rolled_back",
    "audit",
    {**_ROUTE, "restored_revision": int},
    "a model's route went back to an earlier revision's policy",
)
ROUTE_DELETED = EventKind(
    "route.deleted",
    "audit",
    {"revision": int, "old": dict, "reason": OPTIONAL_STR},
    "a model's route was removed (undeployed); its history stays",
)

ROUTE_FAILED = EventKind(
    "route.failed",
    "control",
    {
        "revision": int,
        "serving_revision": (int, type(None)),
        "reason": str,
        "message": str,
        "worker": str,
    },
    "a server worker could not load a route's revision (tampered artifact, failed warm-up) "
    "and kept serving the one it had: it is degraded until a route.applied",
)
ROUTE_APPLIED = EventKind(
    "route.applied",
    "control",
    {"revision": int, "failed_for_s": NUMBER, "worker": str},
    "a server worker that had failed to load a model's route now serves its live revision",
)

#: Every kind the serving capability declares.
SERVING_EVENTS: tuple[EventKind, ...] = (
    PREDICTION,
    PREDICTION_FAILED,
    PREDICTION_SHADOW,
    ROUTE_SET,
    ROUTE_ROLLED_BACK,
    ROUTE_DELETED,
    ROUTE_FAILED,
    ROUTE_APPLIED,
)
