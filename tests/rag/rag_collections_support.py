"""What the collection, HTTP and CLI tests share: a small Markdown corpus written in the
test, a project declaring it, and the real ONNX encoder loaded once per process (wrapped to
count the texts it encodes)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.project import Project, init_project

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from conveyor.rag.types import Embedder, Tokenizer

DOCS = {
    "aliases.md": """\
        ---
        title: Aliases
        author: ana
        ---
        # Aliases

        An alias such as live points at one version of a collection. Moving an alias is
        atomic and recorded in its history, so a rollback restores the previous version.
        """,
    "cache.md": """\
        ---
        title: Embedding cache
        author: bo
        ---
        # Embedding cache

        The embedding cache is keyed by the model identity and the sha256 of the text, so
        a chunk seen before is never encoded again by the same encoder.
        """,
    "gdpr.md": """\
        ---
        title: Subject deletion
        author: ana
        subject: customer-42
        ---
        # Deleting a data subject

        Customer 42 asked for erasure of the tulip order history under GDPR: every
        chunk and vector of the subject is removed from each stored version.
        """,
    "bm25.md": """\
        ---
        title: Lexical search
        author: bo
        ---
        # BM25

        BM25 scores documents by term frequency and inverse document frequency; hybrid
        retrieval fuses it with dense vectors by reciprocal rank fusion.
        """,
}

_SHARED: dict[str, Any] = {}


def encoder() -> Embedder:
    """The default encoder (all-MiniLM-L6-v2 on ONNX Runtime, INT8), opened once."""
    if "encoder" not in _SHARED:
        from conveyor.rag.embed import open_embedder

        _SHARED["encoder"] = open_embedder()
    found: Embedder = _SHARED["encoder"]
    return found


class Counting:
    """An :class:`~conveyor.rag.types.Embedder` that counts what it encodes, or one that
    claims another dimension than its vectors have (``claim``)."""

    def __init__(self, inner: Embedder, claim: int | None = None) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self.claim = claim

    @property
    def model(self) -> str:
        return self.inner.model if self.claim is None else f"{self.inner.model}+claims"

    @property
    def dimension(self) -> int:
        return self.inner.dimension if self.claim is None else self.claim

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    @property
    def tokenizer(self) -> Tokenizer:
        return self.inner.tokenizer

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.texts.extend(texts)
        return self.inner.embed(texts)


def write_docs(folder: Path, docs: dict[str, str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (docs or DOCS).items():
        (folder / name).write_text(textwrap.dedent(text))


def make_project(
    root: Path,
    *,
    index: str | None = None,
    gate: dict[str, Any] | None = None,
    retrieval: dict[str, Any] | None = None,
    extra: str = "",
    env: dict[str, str] | None = None,
) -> Project:
    """A project with collection ``docs`` over ``root/docs`` (written here)."""
    init_project(root, name="ragtest")
    write_docs(root / "docs")
    collection: dict[str, Any] = {
        "sources": [{"kind": "files", "path": "docs"}],
        "chunking": {"target_tokens": 64, "max_tokens": 96, "overlap_tokens": 8},
    }
    if index is not None:
        collection["index"] = index
    if gate is not None:
        collection["gate"] = gate
    if retrieval is not None:
        collection["retrieval"] = retrieval
    spec = {"collections": {"docs": collection}}
    with (root / "conveyor.yaml").open("a") as fh:
        fh.write("\nrag: " + json.dumps(spec) + "\n" + extra)
    return Project.open(root, env=env or {})


def eval_set(root: Path) -> Path:
    """Labelled queries whose relevant documents are the corpus's."""
    rows = [
        {"query": "roll back an alias to the previous version", "relevant": ["aliases.md"]},
        {"query": "embedding cache keyed by model and text hash", "relevant": ["cache.md"]},
        {"query": "erase a customer's tulip orders under GDPR", "relevant": ["gdpr.md"]},
        {"query": "term frequency inverse document frequency", "relevant": ["bm25.md"]},
    ]
    path = root / "evals.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
