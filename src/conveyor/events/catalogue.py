"""The catalogue of event kinds: every kind Conveyor writes, its payload and its durability.

Each capability declares the kinds it writes
(:attr:`conveyor.capability.Capability.events`, :class:`~conveyor.capability.EventKind`
objects kept in the capability's ``events.py``); the foundation's own kinds
(runs, projects) are declared here. Code writes an event through its kind::

    project.events.record(ALIAS_MOVED, subject="fraud", payload={...}, actor=caller)

and :meth:`conveyor.events.log.EventLog.record` checks the payload against the
kind's fields and writes it as its durability says:

- ``audit``: committed before the call returns (who changed what: keys, routes,
  aliases, deletions);
- ``control``: buffered and never dropped; a writer waits when the buffer is full;
- ``telemetry``: never makes a request wait; when the sink is behind it spills
  to local segments, or is shed and counted (predictions, later LLM and tool calls).

``conveyor events kinds`` lists the catalogue. The log itself stores any
well-formed kind (users' pipelines write their own), but Conveyor's code
writes only catalogued kinds: a test holds every ``emit`` in the package to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.capability import EventKind, capabilities, generation
from conveyor.errors import InvalidInputError

__all__ = [
    "FOUNDATION_KINDS",
    "NUMBER",
    "OPTIONAL_NUMBER",
    "OPTIONAL_STR",
    "PROJECT_INITIALIZED",
    "check_payload",
    "kind",
    "kinds",
]

#: Field types: a number may be an int or a float; optional fields may be None.
NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))
OPTIONAL_STR = (str, type(None))

PROJECT_INITIALIZED = EventKind(
    "project.initialized", "audit", {"spec": str}, "conveyor init created the project"
)
RUN_STARTED = EventKind(
    "run.started",
    "control",
    {"run": str, "kind": str, "seed": int, "git": (dict, type(None))},
    "a training run began (seed and git state recorded)",
)
RUN_METRIC = EventKind(
    "run.metric",
    "control",
    {"run": str, "step": (int, type(None)), "metrics": dict},
    "a run logged metrics (at a step, for curves)",
)
RUN_FINISHED = EventKind(
    "run.finished",
    "audit",
    {
        "run": str,
        "status": str,
        "error": OPTIONAL_STR,
        "metrics": dict,
        "seconds": OPTIONAL_NUMBER,
    },
    "a run ended: succeeded, failed or cancelled",
)
#: Kinds the foundation itself writes.
FOUNDATION_KINDS: tuple[EventKind, ...] = (
    PROJECT_INITIALIZED,
    RUN_STARTED,
    RUN_METRIC,
    RUN_FINISHED,
)

_cache: tuple[int, dict[str, EventKind]] | None = None


def kinds() -> dict[str, EventKind]:
    """Every catalogued kind by name: the foundation's, then each capability's."""
    global _cache
    if _cache is not None and _cache[0] == generation():
        return _cache[1]
    found: dict[str, EventKind] = {k.name: k for k in FOUNDATION_KINDS}
    owner = dict.fromkeys(found, "the foundation")
    for declared in capabilities():
        for event in declared.events:
            if event.name in found and found[event.name] is not event:
                raise InvalidInputError(
                    f"the event kind {event.name!r} is declared by both {owner[event.name]!r} "
                    f"and {declared.name!r}",
                    field="events",
                )
            found[event.name] = event
            owner[event.name] = declared.name
    _cache = (generation(), found)
    return found


def kind(name: str) -> EventKind:
    """The catalogued kind ``name``; InvalidInputError listing a few known ones otherwise."""
    found = kinds().get(name)
    if found is None:
        raise InvalidInputError(
            f"event kind {name!r} is not in the catalogue (declare it in a capability's "
            f"events; `conveyor events kinds` lists {len(kinds())})",
            field="kind",
        )
    return found


def check_payload(event: EventKind, payload: Mapping[str, Any]) -> None:
    """Refuse a payload with an unknown, missing or mistyped field, naming it."""
    fields = event.fields
    for name, value in payload.items():
        expected = fields.get(name)
        if expected is None:
            raise InvalidInputError(
                f"event {event.name!r}: unknown payload field {name!r}; fields: "
                f"{', '.join(fields) or 'none'}",
                field=f"payload.{name}",
            )
        if expected is not Any and not isinstance(value, expected):
            raise InvalidInputError(
                f"event {event.name!r}: payload field {name!r} is a {type(value).__name__}, "
                f"expected {_names(expected)}",
                field=f"payload.{name}",
            )
    if len(payload) < len(fields):
        missing = [n for n in fields if n not in payload and n not in event.optional]
        if missing:
            raise InvalidInputError(
                f"event {event.name!r}: payload lacks {', '.join(missing)}",
                field=f"payload.{missing[0]}",
            )


def _names(expected: Any) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)
