"""The contracts between the parts of RAG: what a parser yields, what a chunker yields,
what an embedder and a vector index do, and what retrieval returns.

Each part lives in its own module and depends only on these types; the collection
(:mod:`conveyor.rag.collections`) wires them together.

Vectors are float32 rows, L2-normalized, so the inner product is the cosine similarity;
every index returns *similarities* (higher is better), never distances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from conveyor.backends import BackendURL

__all__ = [
    "Block",
    "Chunk",
    "Document",
    "Embedder",
    "Hit",
    "ParseFailure",
    "Tokenizer",
    "VectorIndex",
]

BlockKind = Literal["heading", "paragraph", "code", "table", "list", "text"]


@dataclass(frozen=True, slots=True)
class Block:
    """A structural unit of a document that a chunker avoids cutting: a heading, a
    paragraph, a code block, a table. ``start``/``end`` are character offsets into
    :attr:`Document.text`."""

    kind: BlockKind
    start: int
    end: int
    section: tuple[str, ...] = ()
    """The headings above the block, outermost first."""
    page: int | None = None
    """1-based page of a PDF."""


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed source document."""

    id: str
    """Stable across builds: the path relative to the source root, or the row's key."""
    text: str
    content_hash: str
    """sha256 (hex) of the source bytes (files) or of the row's text and metadata."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """source, title, date, author, subject (the GDPR subject key), and user columns."""
    blocks: tuple[Block, ...] = ()
    """The document's structure; empty means one plain text block."""


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """A source that could not be turned into a :class:`Document`; the build records it and
    goes on."""

    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document, the unit that is embedded, indexed and returned."""

    doc_id: str
    ordinal: int
    """0-based position of the chunk in its document."""
    text: str
    start: int
    end: int
    """Character offsets of ``text`` in the document's text (the citation)."""
    n_tokens: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """The document's metadata plus ``section`` (headings joined by " > ") and ``page``."""


@runtime_checkable
class Tokenizer(Protocol):
    """The embedding model's own tokenizer, as the chunker and the query path need it."""

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of each token of ``text``, special tokens excluded."""
        ...

    def count(self, text: str) -> int:
        """The number of tokens of ``text``, special tokens excluded."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalized float32 vectors."""

    @property
    def model(self) -> str:
        """Identity of the exact encoder (name, weights digest, variant): the embedding
        cache's key and the collection version's record."""
        ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Longest input the encoder reads (special tokens included); longer is truncated."""
        ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """``(len(texts), dimension)`` normalized rows, in the order given."""
        ...


@runtime_checkable
class VectorIndex(Protocol):
    """A nearest-neighbour index over int64 ids (the chunks' row ids).

    Backends are chosen by URL through :data:`conveyor.rag.index.INDEX`
    (``exact://``, ``hnsw://``, ``ivf://``, ``ivfpq://``, ``postgresql://``).
    """

    @property
    def dimension(self) -> int: ...

    def __len__(self) -> int: ...

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None: ...

    def remove(self, ids: NDArray[np.int64]) -> int:
        """Remove ``ids``; returns how many were present. A removed id is never returned."""
        ...

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        allowed: NDArray[np.int64] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``(scores, ids)``, each ``(len(queries), k)``, best first; cosine similarity;
        ids ``-1`` (score ``-inf``) where fewer than ``k`` match. ``allowed`` restricts the
        result to those ids (a metadata filter)."""
        ...

    def params(self) -> dict[str, Any]:
        """The build parameters, recorded in the collection version."""
        ...

    def save(self, directory: Path) -> None:
        """Write the index's files into ``directory`` (nothing for a database index)."""
        ...

    def close(self) -> None: ...


class IndexFactory(Protocol):
    """What :data:`conveyor.rag.index.INDEX` resolves a scheme to (the backend class)."""

    @classmethod
    def from_url(cls, url: BackendURL, *, dimension: int, namespace: str) -> VectorIndex:
        """A new, empty index. ``namespace`` names it where the backend is shared (a
        table in PostgreSQL): ``<collection>_v<version>``."""
        ...

    @classmethod
    def load(
        cls, url: BackendURL, directory: Path | None, *, dimension: int, namespace: str
    ) -> VectorIndex:
        """The index saved by :meth:`VectorIndex.save` into ``directory`` (or, for a
        database index, the one named ``namespace``)."""
        ...


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved chunk with its citation and the score of each stage it went through."""

    chunk_id: int
    doc_id: str
    text: str
    score: float
    start: int
    end: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)
    """Per stage: ``dense``, ``bm25``, ``fused``, ``rerank``."""
