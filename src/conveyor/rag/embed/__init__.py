"""Embedding models behind one seam: the default ONNX Runtime encoder, sentence-transformers,
and OpenAI-compatible endpoints, with an embedding cache.

Nothing heavy is imported here: numpy, onnxruntime and torch load when an encoder is opened
(torch only to export a model the cache does not hold yet).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names for type checkers; at run time they load on first use
    from conveyor.rag.embed.cache import (
        CachedEmbedder,
        EmbeddingStore,
        MemoryEmbeddingStore,
        text_hash,
    )
    from conveyor.rag.embed.config import EmbeddingConfig
    from conveyor.rag.embed.factory import check_dimension, open_embedder

__all__ = [
    "CachedEmbedder",
    "EmbeddingConfig",
    "EmbeddingStore",
    "MemoryEmbeddingStore",
    "check_dimension",
    "open_embedder",
    "text_hash",
]

_HOMES = {
    "CachedEmbedder": "cache",
    "EmbeddingStore": "cache",
    "MemoryEmbeddingStore": "cache",
    "text_hash": "cache",
    "EmbeddingConfig": "config",
    "check_dimension": "factory",
    "open_embedder": "factory",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
