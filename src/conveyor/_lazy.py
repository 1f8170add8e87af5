"""Lazy re-exports (PEP 562), so importing a package does no work until a name is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, homes: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` that import each name from its home module.

    ``homes`` maps a name to a module; a home starting with ``.`` is relative to ``package``.
    A name whose home is ``package.name`` itself is a subpackage, returned whole
    (``conveyor.rag``).
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}{home}" if home.startswith(".") else home)
        if home in (f"{package}.{name}", f".{name}"):
            return module
        return getattr(module, name)

    def __dir__() -> list[str]:
        return sorted(set(public) | set(homes))

    return __getattr__, __dir__
