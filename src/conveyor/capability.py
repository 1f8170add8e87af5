"""How a capability plugs into Conveyor: one declaration, discovered, never imported by the core.

A capability (data, registry, training, serving, governance, and every one to
come) is a package that says what it brings in one :class:`Capability`
object, written as data with lazy import strings, so declaring costs nothing::

    CAPABILITY = Capability(
        "notes",
        "free-text notes on any subject",
        requires=("governance",),
        settings="notes.settings:SECTIONS",          # sections of conveyor.yaml
        tables=Tables("notes:migrations", "notes.tables", "conveyor_notes_version"),
        services={"notes": "notes.service:Notes"},   # project.notes, built on first use
        cli=(Command("notes.cli:app", "notes"),),     # conveyor notes ...
        routes="notes.http:routes",                   # HTTP routes of the server app
        events=(EventKind("note.added", "audit", {"text": str}),),
        actions={"notes.read": "viewer", "notes.write": "deployer"},
    )

and names it in the entry-point group ``conveyor.capabilities`` of its
package (Conveyor's own capabilities are declared there too, exactly as a
third party's)::

    [project.entry-points."conveyor.capabilities"]
    notes = "notes.capability:CAPABILITY"

The foundation (``store``, ``config``, ``events``, ``checks``, ``backends``)
reads these declarations through :func:`capabilities` and knows none of them
by name: the metadata store runs each one's migration chain, the spec grows
each one's sections, the CLI mounts each one's commands, the server each
one's routes. :func:`register` adds one at run time (tests, embedding).

The order is the dependency order: every capability comes after those it
``requires`` (a cycle or a missing requirement is an error naming it), so
tables that reference another capability's tables are created after them.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from conveyor.backends import Seam
from conveyor.errors import ConfigError, InvalidInputError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Capability",
    "Command",
    "Durability",
    "EventKind",
    "Tables",
    "capabilities",
    "capability",
    "generation",
    "load",
    "register",
    "seams",
    "unregister",
]

#: The entry-point group every capability (built-in or not) is declared in.
ENTRY_POINT_GROUP = "conveyor.capabilities"

#: How an event kind is written (see :mod:`conveyor.events.catalogue`):
#: ``audit``: committed before the call returns (who changed what);
#: ``control``: buffered, never dropped, writers wait when the buffer is full;
#: ``telemetry``: never makes a request wait; sheds or spills when the sink is behind.
Durability = Literal["audit", "control", "telemetry"]


@dataclass(frozen=True, slots=True)
class Tables:
    """A capability's tables: its ORM models and its own Alembic migration chain."""

    migrations: str
    """Alembic ``package:folder`` holding ``env.py`` and ``versions/NNNN_*.py``."""
    models: str
    """The module declaring its tables on :class:`conveyor.store.models.Base`."""
    version_table: str
    """Where this chain records its revision (``conveyor_<name>_version``)."""
    legacy_baseline: str | None = None
    """The revision equal to the schema databases had before capabilities owned
    their tables (one chain, ``conveyor_store_version`` at ``0004``): such a
    database is stamped at this revision instead of being migrated."""


@dataclass(frozen=True, slots=True)
class Command:
    """A CLI contribution: a typer app mounted as ``conveyor NAME ...``, or at the top
    level when ``name`` is None (each of its commands becomes ``conveyor CMD``); a
    function named ``GROUP NAME`` becomes ``conveyor GROUP NAME`` in a group of
    Conveyor's own CLI (``events compact``)."""

    target: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class EventKind:
    """One kind of event: its name, how durably it is written, and its payload's fields.

    ``fields`` maps each payload key to its type (a type or a tuple of types,
    ``type(None)`` for optional); keys not listed are refused. The catalogue
    (:mod:`conveyor.events.catalogue`) checks audit and control payloads on
    every emit, and telemetry payloads in tests.
    """

    name: str
    durability: Durability
    fields: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: Fields that may be missing from the payload (the rest are required).
    optional: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, eq=False)  # compared (and cached) by identity
class Capability:
    """What one capability brings; every field but the name is optional."""

    name: str
    description: str = ""
    requires: tuple[str, ...] = ()
    settings: str | None = None
    """``module:SECTIONS``: a mapping of top-level spec key -> ``(annotation, FieldInfo)``."""
    tables: Tables | None = None
    seams: tuple[Seam, ...] = ()
    """Kinds of state this capability adds under ``backends:`` (URL -> backend)."""
    services: Mapping[str, str] = field(default_factory=dict)
    """Service name -> ``module:factory``; ``factory(project)`` builds it on first use."""
    cli: tuple[Command, ...] = ()
    routes: str | None = None
    """``module:factory``: ``factory(app)`` returns the HTTP routes this capability serves."""
    events: tuple[EventKind, ...] = ()
    actions: Mapping[str, str] = field(default_factory=dict)
    """Action -> the lowest role allowed to do it (``viewer < predictor < deployer < admin``)."""
    doctor: str | None = None
    """``module:function``: ``function(spec)`` returns ``(name, rows)``, more checks for
    ``conveyor doctor`` (each row a dict with ``ok``; a row not ok fails the doctor)."""

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.name.islower():
            raise InvalidInputError(
                f"capability name {self.name!r}: use a lowercase identifier", field="name"
            )


def load(target: str) -> Any:
    """Import ``module:attribute`` (a lazy import string of a declaration)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInputError(
            f"{target!r} is not an import string: expected 'package.module:name'", field="target"
        )
    module = importlib.import_module(module_name)
    try:
        value = module
        for part in attr.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise InvalidInputError(
            f"{module_name} has no attribute {attr!r}", field="target"
        ) from None
    return value


_lock = threading.Lock()
_registered: dict[str, Capability] = {}
_installed: dict[str, Capability] | None = None
_ordered: tuple[Capability, ...] | None = None
_generation = 0


def _entry_points() -> dict[str, Capability]:
    from conveyor.backends import entry_points

    found: dict[str, Capability] = {}
    for ep in entry_points(ENTRY_POINT_GROUP):
        try:
            declared = ep.load()
        except Exception as exc:
            raise ConfigError(
                f"the capability {ep.name!r} ({ep.value}) could not be loaded: "
                f"{type(exc).__name__}: {exc}",
                capability=ep.name,
            ) from exc
        if not isinstance(declared, Capability):
            raise ConfigError(
                f"the entry point {ep.name!r} ({ep.value}) in {ENTRY_POINT_GROUP} is a "
                f"{type(declared).__name__}, not a conveyor.capability.Capability",
                capability=ep.name,
            )
        if declared.name != ep.name:
            raise ConfigError(
                f"the entry point {ep.name!r} ({ep.value}) declares a capability named "
                f"{declared.name!r}; the two names must agree",
                capability=ep.name,
            )
        found.setdefault(declared.name, declared)
    return found


def capabilities() -> tuple[Capability, ...]:
    """Every capability, installed or registered, in dependency order."""
    global _installed, _ordered
    ordered = _ordered
    if ordered is not None:
        return ordered
    with _lock:
        if _installed is None:
            _installed = _entry_points()
        _ordered = _dependency_order({**_installed, **_registered})
        return _ordered


def capability(name: str) -> Capability:
    """The capability called ``name``; an error listing the known ones otherwise."""
    for found in capabilities():
        if found.name == name:
            return found
    known = ", ".join(c.name for c in capabilities()) or "none"
    raise InvalidInputError(f"no capability named {name!r} (known: {known})", field="capability")


def register(declared: Capability, *, clobber: bool = False) -> None:
    """Add a capability at run time, as if it were installed (tests, embedding)."""
    if not isinstance(declared, Capability):
        raise InvalidInputError(
            f"expected a Capability, got {type(declared).__name__}", field="capability"
        )
    with _lock:
        installed = _installed if _installed is not None else {}
        if not clobber and (declared.name in _registered or declared.name in installed):
            raise InvalidInputError(
                f"a capability named {declared.name!r} is already known; pass clobber=True "
                "to replace it",
                field="capability",
            )
        _registered[declared.name] = declared
        _changed()


def unregister(name: str) -> None:
    """Forget a capability added with :func:`register` (installed ones stay)."""
    with _lock:
        _registered.pop(name, None)
        _changed()


def _changed() -> None:
    global _ordered, _generation
    _ordered = None
    _generation += 1


def generation() -> int:
    """A number that changes whenever a capability is registered or unregistered, so
    what is derived from the declarations (actions, event kinds) can be cached."""
    return _generation


def _dependency_order(known: Mapping[str, Capability]) -> tuple[Capability, ...]:
    ordered: list[Capability] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise ConfigError(f"capabilities require each other in a cycle: {cycle}")
        declared = known[name]
        state[name] = "visiting"
        for needed in declared.requires:
            if needed not in known:
                raise ConfigError(
                    f"the capability {name!r} requires {needed!r}, which is not installed "
                    f"(installed: {', '.join(sorted(known))})",
                    capability=name,
                )
            visit(needed, (*path, name))
        state[name] = "done"
        ordered.append(declared)

    for name in sorted(known):
        visit(name, ())
    return tuple(ordered)


def seams() -> dict[str, Seam]:
    """Every seam: the foundation's (store, artifacts, events, cache), then the
    capabilities' (``backends:`` in the spec has one URL for each)."""
    from conveyor.backends import SEAMS

    found = dict(SEAMS)
    for declared in capabilities():
        for seam in declared.seams:
            if seam.name in found:
                raise ConfigError(
                    f"the capability {declared.name!r} declares the seam {seam.name!r}, "
                    "which already exists",
                    capability=declared.name,
                )
            found[seam.name] = seam
    return found


def contributed(attribute: str) -> Iterable[tuple[Capability, Any]]:
    """``(capability, value)`` for every capability whose ``attribute`` is set."""
    for declared in capabilities():
        value = getattr(declared, attribute)
        if value:
            yield declared, value
