"""Retrieval-augmented generation: versioned collections, hybrid retrieval, context packing.

The package does no work at import; :mod:`conveyor.rag.api` holds the Python entry points
(``conveyor.rag.search``, ``conveyor.rag.build``), loaded on first use.
"""

from typing import Any

__all__ = ["build", "context", "search"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from conveyor.rag import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
