"""Model registry: models, immutable versions, aliases with history, flavors, signatures.

The public names load on first use: importing ``conveyor.registry`` imports
no ML library and no ORM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor._lazy import lazy_exports

if TYPE_CHECKING:
    from conveyor.registry.aliases import Alias
    from conveyor.registry.flavors import LibraryVersionWarning, PythonModel
    from conveyor.registry.registry import Registry
    from conveyor.registry.signature import Signature
    from conveyor.registry.versions import AliasMove, LoadedModel, ModelVersion

__all__ = [
    "Alias",
    "AliasMove",
    "LibraryVersionWarning",
    "LoadedModel",
    "ModelVersion",
    "PythonModel",
    "Registry",
    "Signature",
]

_HOMES = {
    "Alias": ".aliases",
    "AliasMove": ".versions",
    "LibraryVersionWarning": ".flavors",
    "LoadedModel": ".versions",
    "ModelVersion": ".versions",
    "PythonModel": ".flavors",
    "Registry": ".registry",
    "Signature": ".signature",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
