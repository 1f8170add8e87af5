"""The RAG section of ``conveyor.yaml``: ``rag:``, one entry per collection.

::

    rag:
      cache:                      # the retrieval cache (the project's cache seam)
        enabled: true
        ttl_s: 3600
      alias_poll_s: 1.0           # how often a server re-reads where an alias points
      collections:
        docs:
          sources:
            - {kind: files, path: docs, include: ["*.md"]}
          chunking: {target_tokens: 300}
          embedding: {}            # the default: all-MiniLM-L6-v2 on ONNX Runtime
          index: hnsw://?m=32      # exact:// below exact_below chunks when index is unset
          retrieval: {k: 10}
          gate: {eval_set: evals/docs.jsonl, tolerance: 0.01}

Sources, chunking and embedding are the models of the parts that read them
(:mod:`conveyor.rag.sources`, :mod:`conveyor.rag.chunking`, :mod:`conveyor.rag.embed`),
validated with the spec; retrieval settings are a plain mapping here, validated by
:class:`conveyor.rag.retriever.RetrievalConfig` when a collection is served.
Every field can be set from the environment (``CONVEYOR_RAG__CACHE__TTL_S=60``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.rag.chunking import ChunkingConfig
from conveyor.rag.embed.config import EmbeddingConfig
from conveyor.rag.sources import RagSource

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["SECTIONS", "CacheSpec", "CollectionSpec", "GateSpec", "RagSpec", "rag_of"]

_STRICT = ConfigDict(extra="forbid", frozen=True)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def check_collection_name(name: str) -> str:
    """A collection's name: lowercase letters, digits and '_' (it names database tables)."""
    from conveyor.errors import InvalidInputError

    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"collection name {name!r}: use 1 to 63 lowercase letters, digits or '_', "
            "starting with a letter",
            field="collection",
        )
    return name


class GateSpec(BaseModel):
    """The quality gate a new version passes before its alias moves."""

    model_config = _STRICT

    eval_set: str | None = Field(
        None,
        description="A JSONL file of {query, relevant} (relative to the project), or "
        "'docstrings' for the built-in known-item set; None: no gate.",
    )
    metric: str = Field("ndcg@10", description="The metric compared (nDCG@10).")
    tolerance: float = Field(
        0.01, ge=0, lt=1, description="How far below the live version's nDCG@10 is still let in."
    )
    by: str = Field(
        "doc",
        description="What the set's relevant ids are: 'doc' (document ids) or 'chunk'.",
    )

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value != "ndcg@10":
            raise ValueError(f"metric {value!r}: the gate compares ndcg@10")
        return value


class CollectionSpec(BaseModel):
    """One collection: where its documents come from and how they are cut, embedded,
    indexed and retrieved."""

    model_config = _STRICT

    sources: list[RagSource] = Field(
        default_factory=list,
        description="Where documents come from: {kind: files|sql|dataset, ...} "
        "(conveyor.rag.sources).",
    )
    chunking: ChunkingConfig = Field(
        default_factory=ChunkingConfig,
        description="Chunk sizes in tokens: target_tokens, max_tokens, overlap_tokens, "
        "min_tokens (conveyor.rag.chunking.ChunkingConfig).",
    )
    embedding: EmbeddingConfig = Field(
        default_factory=EmbeddingConfig,
        description="The embedding model (conveyor.rag.embed.EmbeddingConfig); the default: "
        "all-MiniLM-L6-v2 on ONNX Runtime, INT8.",
    )
    index: str | None = Field(
        None,
        description="The vector index URL: hnsw://, exact://, ivf://, ivfpq://, "
        "postgresql://...; None: exact:// under exact_below chunks, else hnsw://.",
    )
    exact_below: int = Field(
        20_000,
        ge=0,
        description="With no index URL, a version with fewer chunks uses exact search.",
    )
    retrieval: dict[str, Any] = Field(
        default_factory=dict,
        description="Retrieval settings: k, fusion, rerank, packing "
        "(conveyor.rag.retriever.RetrievalConfig).",
    )
    reranker: str | None = Field(
        None,
        description="With retrieval.rerank: a local cross-encoder model folder, or the JSON "
        "file of a fitted learned-fusion reranker (relative to the project).",
    )
    gate: GateSpec = Field(
        default_factory=GateSpec, description="The quality gate of a new version."
    )
    alias: str = Field("live", description="The alias a build moves when its gate passes.")


class CacheSpec(BaseModel):
    """The retrieval cache: answers kept in the project's cache seam by exact query and
    parameters, for the version served."""

    model_config = _STRICT

    enabled: bool = Field(True, description="Keep and reuse retrieval answers.")
    ttl_s: float = Field(3600.0, gt=0, le=30 * 86400, description="Seconds an answer is kept.")
    near_duplicate: float | None = Field(
        None,
        gt=0.5,
        le=1.0,
        description="Also answer a query whose embedding has at least this cosine "
        "similarity with a query answered before (same version and parameters) from that "
        "answer, e.g. 0.97; None: exact queries only.",
    )
    near_duplicate_entries: int = Field(
        2048,
        ge=1,
        le=1_000_000,
        description="Recent query vectors a process keeps per collection version.",
    )


class RagSpec(BaseModel):
    """Retrieval-augmented generation: the collections and how they are served."""

    model_config = _STRICT

    collections: dict[str, CollectionSpec] = Field(
        default_factory=dict, description="Collections by name."
    )
    cache: CacheSpec = Field(default_factory=CacheSpec, description="The retrieval cache.")
    alias_poll_s: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="Seconds a server trusts where an alias points before reading it again "
        "(a move made in the same process is seen at once).",
    )
    max_k: int = Field(100, ge=1, le=10_000, description="The largest k a query may ask.")
    inline_max_ms: float = Field(
        20.0,
        ge=0,
        le=1000,
        description="A server answers a lone query on its event loop (no hop to a thread) "
        "when the version's searches have taken at most this long on average and nothing "
        "needs I/O; 0 sends every query to a thread.",
    )

    @field_validator("collections")
    @classmethod
    def _names(cls, value: dict[str, CollectionSpec]) -> dict[str, CollectionSpec]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(
                    f"collection name {name!r}: use lowercase letters, digits or '_', "
                    "starting with a letter"
                )
        return value


SECTIONS: dict[str, Any] = {
    "rag": (
        RagSpec,
        Field(
            default_factory=RagSpec,
            description="RAG collections: sources, chunking, embedding, index, retrieval, gate.",
        ),
    ),
}


def rag_of(spec: ProjectSpec) -> RagSpec:
    """The ``rag:`` section (defaults when the spec has none)."""
    found = getattr(spec, "rag", None)
    return found if isinstance(found, RagSpec) else RagSpec()
