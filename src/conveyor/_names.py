"""Tables of named things (gates, model flavors, expectation kinds, metrics, runners).

Each is a :class:`NameTable`: a read-only mapping from name to object, with
:meth:`NameTable.register` to add one at run time (tests, plugins). As with
:meth:`conveyor.backends.Seam.register`, replacing a name that is taken needs
``clobber=True``, so two plugins never silently shadow each other; and an
unknown name is an error listing the known ones::

    GATES = NameTable("gate", {"metric_floor": build_metric_floor, ...})
    GATES.register("max_rows", build_max_rows)
    GATES.require("metric_flor")   # InvalidInputError: unknown gate 'metric_flor'; known: ...

Not to be confused with the model registry (:mod:`conveyor.registry`), which
stores model versions; this module holds code, in memory, per process. It
imports only the standard library and :mod:`conveyor.errors`, so every layer
may use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

from conveyor.errors import ConveyorError, InvalidInputError

__all__ = ["NameTable"]

T = TypeVar("T")


class NameTable(Mapping[str, T]):
    """Objects by name, in the order they were added; :meth:`register` adds one.

    ``what`` names an entry in messages ("gate", "model flavor"); an unknown
    name raises ``error`` (InvalidInputError unless given, ConfigError for
    what a spec file names) with ``field`` in its context. ``check``, when
    given, is called with each ``(name, obj)`` registered and raises if the
    object cannot serve under that name.

    Lookups by ``[]``, ``in`` and ``.get`` behave as a dict's (``KeyError``);
    :meth:`require` is the lookup whose error a user reads.
    """

    def __init__(
        self,
        what: str,
        entries: Mapping[str, T] | Iterable[tuple[str, T]] = (),
        *,
        error: type[ConveyorError] = InvalidInputError,
        field: str = "name",
        check: Callable[[str, T], None] | None = None,
    ) -> None:
        self.what = what
        self._error = error
        self._field = field
        self._check = check
        self._lock = threading.Lock()
        # Replaced, never mutated: a reader iterating the old dict is never disturbed.
        self._entries: dict[str, T] = {}
        for name, obj in entries.items() if isinstance(entries, Mapping) else entries:
            self.register(name, obj)

    def __repr__(self) -> str:
        return f"NameTable({self.what!r}, {list(self._entries)})"

    # -- Mapping -----------------------------------------------------------------------

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    # -- changing ----------------------------------------------------------------------

    def register(self, name: str, obj: T, *, clobber: bool = False) -> T:
        """Add ``obj`` under ``name`` (returned, so a definition can register itself).

        A name already taken is refused unless ``clobber=True``.
        """
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise InvalidInputError(
                f"a {self.what} name is a non-empty string without surrounding spaces, "
                f"got {name!r}",
                field="name",
            )
        if self._check is not None:
            self._check(name, obj)
        with self._lock:
            taken = self._entries.get(name)
            if taken is not None and not clobber:
                raise InvalidInputError(
                    f"{self.what} {name!r} is already registered ({taken!r}); "
                    "pass clobber=True to replace it",
                    field="name",
                    name=name,
                )
            self._entries = {**self._entries, name: obj}
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what it held (tests undo their registrations with it)."""
        with self._lock:
            if name not in self._entries:
                raise self.unknown(name)
            entries = dict(self._entries)
            removed = entries.pop(name)
            self._entries = entries
        return removed

    # -- finding -----------------------------------------------------------------------

    def require(self, name: str, *, where: str | None = None, field: str | None = None) -> T:
        """The object called ``name``, or the error listing the known names.

        ``where`` prefixes the message (``"conveyor.yaml:12: models.risk.gates[0]"``);
        ``field`` replaces the table's field in the error's context.
        """
        entries = self._entries
        if not isinstance(name, str) or name not in entries:
            raise self.unknown(name, where=where, field=field)
        return entries[name]

    def unknown(
        self, name: object, *, where: str | None = None, field: str | None = None
    ) -> ConveyorError:
        """The error for a name that is not in the table (raise it)."""
        prefix = f"{where}: " if where else ""
        return self._error(
            f"{prefix}unknown {self.what} {name!r}; known: {', '.join(self._entries) or 'none'}",
            field=field or self._field,
            known=list(self._entries),
        )
