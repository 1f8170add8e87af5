"""An embedding cache: a text seen before, by the same encoder, is not encoded again.

Entries are keyed by the encoder's identity (:attr:`Embedder.model`, which names the
weights' digest and the variant, so an int8 vector never answers for a float one) and the
SHA-256 of the text. Where the vectors live is an :class:`EmbeddingStore`: the in-memory
one here, a SQL table in the collections (their ``chunk_embeddings``).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from conveyor.rag.types import Embedder, Tokenizer

__all__ = ["CachedEmbedder", "EmbeddingStore", "MemoryEmbeddingStore", "text_hash"]


def text_hash(text: str) -> str:
    """The cache key of a text: SHA-256 (hex) of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@runtime_checkable
class EmbeddingStore(Protocol):
    """Where cached vectors live: by model identity, then by text hash."""

    def get_many(self, model: str, hashes: Sequence[str]) -> Mapping[str, NDArray[np.float32]]:
        """The vectors held for those of ``hashes`` that are present (others are absent)."""
        ...

    def put_many(self, model: str, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        """Store (or overwrite) ``vectors``, keyed by text hash."""
        ...


class MemoryEmbeddingStore:
    """An :class:`EmbeddingStore` in a dict, least recently used first out when
    ``max_entries`` is set. Thread-safe."""

    def __init__(self, max_entries: int | None = None) -> None:
        if max_entries is not None and max_entries < 1:
            raise InvalidInputError("max_entries must be at least 1", field="max_entries")
        self._max = max_entries
        self._data: OrderedDict[tuple[str, str], NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        found: dict[str, NDArray[np.float32]] = {}
        with self._lock:
            for h in hashes:
                vector = self._data.get((model, h))
                if vector is not None:
                    self._data.move_to_end((model, h))
                    found[h] = vector
        return found

    def put_many(self, model: str, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        with self._lock:
            for h, vector in vectors.items():
                self._data[(model, h)] = vector
                self._data.move_to_end((model, h))
            while self._max is not None and len(self._data) > self._max:
                self._data.popitem(last=False)


class CachedEmbedder:
    """An :class:`~conveyor.rag.types.Embedder` that asks ``store`` first and encodes only
    the texts it misses (each distinct text once, however often it repeats in the call)."""

    def __init__(self, inner: Embedder, store: EmbeddingStore) -> None:
        self.inner = inner
        self.store = store
        self.hits = 0
        """Texts answered from the store, since construction."""
        self.misses = 0
        """Distinct texts the inner encoder was asked for, since construction."""

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    @property
    def tokenizer(self) -> Tokenizer:
        return self.inner.tokenizer

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        if isinstance(texts, str):
            raise InvalidInputError("embed takes a sequence of texts, not one string")
        hashes = [text_hash(t) for t in texts]
        model = self.inner.model
        found = dict(self.store.get_many(model, list(dict.fromkeys(hashes))))
        self.hits += sum(1 for h in hashes if h in found)
        missing: dict[str, str] = {}
        for h, t in zip(hashes, texts, strict=True):
            if h not in found:
                missing.setdefault(h, t)
        if missing:
            self.misses += len(missing)
            fresh = self.inner.embed(list(missing.values()))
            new = {h: fresh[i] for i, h in enumerate(missing)}
            self.store.put_many(model, new)
            found.update(new)
        if not found:
            return np.empty((0, self.dimension), dtype=np.float32)
        # The width of the vectors at hand: asking a remote encoder's dimension may cost a
        # request.
        width = len(next(iter(found.values())))
        out = np.empty((len(texts), width), dtype=np.float32)
        for i, h in enumerate(hashes):
            out[i] = found[h]
        return out
