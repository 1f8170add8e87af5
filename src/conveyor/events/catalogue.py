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

from collections.abc import Iterable, Mapping
from typing import Any

from conveyor.capability import EventKind, capabilities, generation
from conveyor.errors import InvalidInputError

__all__ = [
    "FOUNDATION",
    "FOUNDATION_KINDS",
    "NUMBER",
    "OPTIONAL_NUMBER",
    "OPTIONAL_STR",
    "PROJECT_INITIALIZED",
    "RUN_FINISHED",
    "RUN_METRIC",
    "RUN_STARTED",
    "check_payload",
    "declared_by",
    "describe",
    "kind",
    "kinds",
    "markdown_table",
    "type_name",
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

#: What :func:`declared_by` answers for the foundation's own kinds.
FOUNDATION = "foundation"

_cache: tuple[int, dict[str, EventKind], dict[str, str]] | None = None


def kinds() -> dict[str, EventKind]:
    """Every catalogued kind by name: the foundation's, then each capability's."""
    return _catalogue()[0]


def declared_by(name: str) -> str:
    """The capability that declares the kind ``name`` (``"foundation"`` for the foundation's)."""
    kind(name)  # InvalidInputError for an unknown kind
    return _catalogue()[1][name]


def _catalogue() -> tuple[dict[str, EventKind], dict[str, str]]:
    global _cache
    cached = _cache
    if cached is not None and cached[0] == generation():
        return cached[1], cached[2]
    current = generation()
    found: dict[str, EventKind] = {k.name: k for k in FOUNDATION_KINDS}
    owner = dict.fromkeys(found, FOUNDATION)
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
    _cache = (current, found, owner)
    return found, owner


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


def type_name(expected: Any) -> str:
    """A field's type as people write it: ``str``, ``int | float``, ``str | None``, ``Any``."""
    if expected is Any:
        return "Any"
    types = expected if isinstance(expected, tuple) else (expected,)
    return " | ".join("None" if t is type(None) else t.__name__ for t in types)


def describe(event: EventKind) -> dict[str, Any]:
    """A catalogued kind as JSON (``conveyor events kinds --json``): its name, durability,
    fields (name -> type; optional ones may be missing), description and capability."""
    return {
        "name": event.name,
        "durability": event.durability,
        "fields": {name: type_name(expected) for name, expected in event.fields.items()},
        "optional": sorted(event.optional),
        "description": event.description,
        "capability": declared_by(event.name),
    }


def markdown_table(owners: Iterable[str] | None = None) -> str:
    """The catalogue as a Markdown table (``docs/events.md`` holds Conveyor's own).

    ``owners`` keeps only the kinds these capabilities declare (``"foundation"`` for
    the foundation's); all of them by default. An optional field is written
    ``name?``.
    """
    wanted = None if owners is None else set(owners)
    rows = [
        "| kind | durability | payload fields | capability | what happened |",
        "|---|---|---|---|---|",
    ]
    for name, event in kinds().items():
        owner = declared_by(name)
        if wanted is not None and owner not in wanted:
            continue
        fields = ", ".join(
            f"`{field}{'?' if field in event.optional else ''}: {type_name(expected)}`"
            for field, expected in event.fields.items()
        )
        cells = (f"`{name}`", event.durability, fields or "-", owner, event.description)
        # A pipe inside a cell (``str | None``), even in a code span, must be escaped.
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
