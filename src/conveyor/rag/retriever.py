"""The query path: embed, search the vector index and BM25, fuse, rerank, pack.

:class:`Retriever` wires the parts a collection version holds (the embedder, the vector
index, the BM25 index, a chunk lookup) under one :class:`RetrievalConfig`::

    retriever = Retriever(embedder, index, bm25, lookup, RetrievalConfig(mode="hybrid"))
    result = retriever.search("how do I compute a mean?", k=10, allowed=ids_matching_filter)
    result.hits          # Hit objects, best first, each with its per-stage scores
    result.latency_ms    # {"embed": .., "dense": .., "bm25": .., "fuse": .., "rerank": ..}
    ctx = retriever.context("how do I compute a mean?", budget_tokens=800)
    ctx.context.text, ctx.context.citations, ctx.warnings

``allowed`` (the ids a metadata filter keeps) is passed to both indexes, so a filtered
query is exact in both, never a post-filter of a short list. A query longer than the
encoder reads is truncated for the dense stage (BM25 reads all of it) and the result
carries a warning saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.errors import ConfigError, InvalidInputError
from conveyor.rag.timing import ms_since
from conveyor.rag.types import Chunk, Hit

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from conveyor.rag.lexical import BM25Index
    from conveyor.rag.packing import PackedContext
    from conveyor.rag.rerank import Candidate, Reranker
    from conveyor.rag.types import Embedder, Tokenizer, VectorIndex

__all__ = ["ChunkLookup", "ContextResult", "RetrievalConfig", "Retriever", "SearchResult"]

#: Chunk ids to their records (ids it does not know are left out of the mapping).
ChunkLookup = Callable[[Sequence[int]], Mapping[int, Chunk]]

#: Tokens the encoder adds around a query ([CLS] and [SEP] for BERT-like models).
_SPECIAL_TOKENS = 2


class RetrievalConfig(BaseModel):
    """How a collection answers queries; stored with the collection version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["dense", "bm25", "hybrid"] = Field(
        "hybrid", description="dense vectors, BM25, or both fused"
    )
    fusion: Literal["rrf", "convex"] = Field(
        "convex", description="reciprocal rank fusion, or a weighted sum of normalized scores"
    )
    weight: float = Field(
        0.45,
        ge=0.0,
        le=1.0,
        description="convex fusion: the dense list's weight (BM25 gets 1 - weight); "
        "tune it on an eval set (conveyor.rag.fusion.tune_weight)",
    )
    normalization: Literal["minmax", "zscore"] = Field(
        "zscore", description="convex fusion: per-query score normalization"
    )
    rrf_k: int = Field(60, ge=0, description="the RRF constant")
    k: int = Field(10, ge=1, le=1000, description="hits returned")
    candidates: int = Field(
        50, ge=1, le=10_000, description="hits each of the dense and BM25 stages retrieves"
    )
    rerank: bool = Field(False, description="rescore the fused top hits with the reranker")
    rerank_depth: int = Field(30, ge=1, le=1000, description="fused hits the reranker sees")
    budget_tokens: int = Field(1024, ge=1, description="context packing's token budget")
    order: Literal["document", "score"] = Field(
        "document", description="packed passages: by document then position, or by score"
    )
    merge_neighbours: bool = Field(True, description="merge overlapping chunks of a document")
    dedupe_threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="word 3-shingle Jaccard at which a chunk is a duplicate"
    )
    compress: bool = Field(False, description="extractive sentence selection in each passage")

    @model_validator(mode="after")
    def _depths(self) -> RetrievalConfig:
        if self.candidates < self.k:
            raise ValueError(f"candidates ({self.candidates}) must be at least k ({self.k})")
        return self


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits (best first), the milliseconds each stage took, and warnings."""

    hits: list[Hit]
    latency_ms: dict[str, float]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ContextResult:
    """The packed context, the hits it was packed from, stage latencies and warnings."""

    context: PackedContext
    hits: list[Hit]
    latency_ms: dict[str, float]
    warnings: list[str]


class Retriever:
    """One collection version's query pipeline (thread-safe when its parts are)."""

    def __init__(
        self,
        embedder: Embedder | None,
        index: VectorIndex | None,
        bm25: BM25Index | None,
        lookup: ChunkLookup,
        config: RetrievalConfig | None = None,
        *,
        reranker: Reranker | None = None,
    ) -> None:
        self.config = config or RetrievalConfig()
        if self.config.mode in ("dense", "hybrid") and (embedder is None or index is None):
            raise ConfigError(
                f"retrieval mode {self.config.mode!r} needs an embedder and a vector index",
                field="mode",
            )
        if self.config.mode in ("bm25", "hybrid") and bm25 is None:
            raise ConfigError(
                f"retrieval mode {self.config.mode!r} needs a BM25 index", field="mode"
            )
        if self.config.rerank and reranker is None:
            raise ConfigError("rerank is on but no reranker was given", field="rerank")
        if embedder is not None and index is not None and embedder.dimension != index.dimension:
            raise ConfigError(
                f"the embedder's dimension {embedder.dimension} does not match the index's "
                f"{index.dimension}",
                embedder=embedder.dimension,
                index=index.dimension,
            )
        self.embedder = embedder
        self.index = index
        self.bm25 = bm25
        self.lookup = lookup
        self.reranker = reranker
        self._packing_tokenizer: Tokenizer | None = None

    def with_config(self, **changes: object) -> Retriever:
        """The same parts under a changed configuration (an evaluation's variants)."""
        config = RetrievalConfig.model_validate({**self.config.model_dump(), **changes})
        return Retriever(
            self.embedder, self.index, self.bm25, self.lookup, config, reranker=self.reranker
        )

    def search(
        self,
        query: str,
        k: int | None = None,
        *,
        allowed: Sequence[int] | NDArray[np.int64] | None = None,
    ) -> SearchResult:
        """The ``k`` best chunks for ``query`` (``config.k`` by default)."""
        cfg = self.config
        k = cfg.k if k is None else k
        if k < 1:
            raise InvalidInputError(f"k must be positive, got {k}", field="k")
        latency: dict[str, float] = {}
        warnings: list[str] = []
        ranked, stage_scores, fused = self._stages(query, k, allowed, latency, warnings)
        rerank_scores: dict[int, float] = {}
        records: dict[int, Chunk] = {}
        if cfg.rerank and ranked:
            ranked, rerank_scores, records = self._rerank(query, ranked, stage_scores, latency)
        top = ranked[:k]
        t0 = time.perf_counter()
        # the reranked head was read for its texts; only hits below it are looked up
        missing = [i for i, _ in top if i not in records]
        if missing:
            records.update(self.lookup(missing))
        hits: list[Hit] = []
        for chunk_id, score in top:
            chunk = records.get(chunk_id)
            if chunk is None:  # deleted between the index search and the lookup
                continue
            scores = {name: s[chunk_id] for name, s in stage_scores.items() if chunk_id in s}
            if cfg.mode == "hybrid":
                scores["fused"] = fused[chunk_id]
            if chunk_id in rerank_scores:
                scores["rerank"] = rerank_scores[chunk_id]
            hits.append(
                Hit(
                    chunk_id=chunk_id,
                    doc_id=chunk.doc_id,
                    text=chunk.text,
                    score=score,
                    start=chunk.start,
                    end=chunk.end,
                    metadata=chunk.metadata,
                    scores=scores,
                )
            )
        latency["lookup"] = ms_since(t0)
        return SearchResult(hits, latency, warnings)

    def candidates(
        self,
        query: str,
        *,
        allowed: Sequence[int] | NDArray[np.int64] | None = None,
    ) -> list[Candidate]:
        """The fused candidates the reranker would see (the first ``rerank_depth``), with
        their texts and stage scores: what a learned reranker is fitted on."""
        ranked, stage_scores, _ = self._stages(query, self.config.k, allowed, {}, [])
        candidates, _ = self._head(ranked, stage_scores)
        return candidates

    def _stages(
        self,
        query: str,
        k: int,
        allowed: Sequence[int] | NDArray[np.int64] | None,
        latency: dict[str, float],
        warnings: list[str],
    ) -> tuple[list[tuple[int, float]], dict[str, dict[int, float]], dict[int, float]]:
        """Dense and/or BM25, then fusion: the fused ranking (id, score), each stage's
        scores by id, and the fused scores by id."""
        import numpy as np

        cfg = self.config
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("the query is empty", field="query")
        depth = max(cfg.candidates, k)
        allow = None if allowed is None else np.asarray(allowed, dtype=np.int64).ravel()
        stages: dict[str, tuple[NDArray[np.float32], NDArray[np.int64]]] = {}
        if cfg.mode in ("dense", "hybrid"):
            stages["dense"] = self._dense(query, depth, allow, latency, warnings)
        if cfg.mode in ("bm25", "hybrid"):
            assert self.bm25 is not None
            t0 = time.perf_counter()
            stages["bm25"] = self.bm25.search(query, depth, allowed=allow)
            latency["bm25"] = ms_since(t0)
        t0 = time.perf_counter()
        fused_scores, fused_ids = self._fuse(stages, depth)
        ranked = [
            (int(i), float(s)) for i, s in zip(fused_ids, fused_scores, strict=True) if i >= 0
        ]
        latency["fuse"] = ms_since(t0)
        stage_scores = {
            name: {int(i): float(s) for i, s in zip(ids, scores, strict=True) if i >= 0}
            for name, (scores, ids) in stages.items()
        }
        return ranked, stage_scores, dict(ranked)

    def context(
        self,
        query: str,
        budget_tokens: int | None = None,
        *,
        k: int | None = None,
        allowed: Sequence[int] | NDArray[np.int64] | None = None,
    ) -> ContextResult:
        """The packed context for ``query``: the best hits within ``budget_tokens`` tokens
        (``config.budget_tokens`` by default), with citations and warnings."""
        from conveyor.rag.packing import pack

        cfg = self.config
        result = self.search(query, k, allowed=allowed)
        tokenizer = self._tokenizer()
        t0 = time.perf_counter()
        packed = pack(
            result.hits,
            tokenizer=tokenizer,
            budget_tokens=cfg.budget_tokens if budget_tokens is None else budget_tokens,
            order=cfg.order,
            merge_neighbours=cfg.merge_neighbours,
            dedupe_threshold=cfg.dedupe_threshold,
            compress=cfg.compress,
            embedder=self.embedder,
            query=query,
        )
        latency = {**result.latency_ms, "pack": ms_since(t0)}
        return ContextResult(packed, result.hits, latency, [*result.warnings, *packed.warnings])

    # -- stages ---------------------------------------------------------------------------

    def _tokenizer(self) -> Tokenizer:
        """Packing's tokenizer (the embedder's, or the default model's without one), its
        counts remembered across this retriever's queries."""
        if self._packing_tokenizer is None:
            from conveyor.rag.packing import RememberedCounts

            if self.embedder is not None:
                tokenizer = self.embedder.tokenizer
            else:
                from conveyor.rag.embed.tokenizer import HFTokenizer, default_model_dir

                tokenizer = HFTokenizer.from_file(default_model_dir())
            self._packing_tokenizer = RememberedCounts(tokenizer)
        return self._packing_tokenizer

    def _dense(
        self,
        query: str,
        depth: int,
        allow: NDArray[np.int64] | None,
        latency: dict[str, float],
        warnings: list[str],
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        from conveyor.rag.packing import truncate_query

        assert self.embedder is not None and self.index is not None
        t0 = time.perf_counter()
        text, warning = truncate_query(
            query, self.embedder.tokenizer, self.embedder.max_tokens - _SPECIAL_TOKENS
        )
        if warning:
            warnings.append(warning)
        vector = self.embedder.embed([text])
        latency["embed"] = ms_since(t0)
        t0 = time.perf_counter()
        scores, ids = self.index.search(vector, depth, allowed=allow)
        latency["dense"] = ms_since(t0)
        return scores[0], ids[0]

    def _fuse(
        self, stages: Mapping[str, tuple[NDArray[np.float32], NDArray[np.int64]]], depth: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        from conveyor.rag.fusion import convex, rrf

        cfg = self.config
        if len(stages) == 1:
            scores, ids = next(iter(stages.values()))
            keep = ids >= 0
            return scores[keep], ids[keep]
        if cfg.fusion == "rrf":
            return rrf(stages, k=cfg.rrf_k, limit=depth)
        return convex(
            stages["dense"],
            stages["bm25"],
            weight=cfg.weight,
            normalization=cfg.normalization,
            limit=depth,
        )

    def _head(
        self, ranked: list[tuple[int, float]], stage_scores: Mapping[str, Mapping[int, float]]
    ) -> tuple[list[Candidate], dict[int, Chunk]]:
        """The first ``rerank_depth`` fused hits as reranker candidates (those the lookup
        still knows), and the records looked up for them."""
        from conveyor.rag.rerank import Candidate

        head = ranked[: self.config.rerank_depth]
        records = dict(self.lookup([i for i, _ in head]))
        candidates = [
            Candidate(
                chunk_id=i,
                text=records[i].text,
                fused=s,
                rank=rank,
                stage_scores={name: m[i] for name, m in stage_scores.items() if i in m},
            )
            for rank, (i, s) in enumerate(head)
            if i in records
        ]
        return candidates, records

    def _rerank(
        self,
        query: str,
        ranked: list[tuple[int, float]],
        stage_scores: Mapping[str, Mapping[int, float]],
        latency: dict[str, float],
    ) -> tuple[list[tuple[int, float]], dict[int, float], dict[int, Chunk]]:
        """The reranked head then the rest in fused order, the rerank scores by id, and the
        head's records (the hits are built from them)."""
        from conveyor.rag.rerank import rerank_scores

        assert self.reranker is not None
        t0 = time.perf_counter()
        candidates, records = self._head(ranked, stage_scores)
        scores = rerank_scores(self.reranker, query, candidates)
        order = sorted(range(len(candidates)), key=lambda j: (-float(scores[j]), j))
        reranked = [(candidates[j].chunk_id, float(scores[j])) for j in order]
        latency["rerank"] = ms_since(t0)
        # below the rerank depth, hits keep their fused order after the reranked ones
        return (
            reranked + ranked[self.config.rerank_depth :],
            {i: s for i, s in reranked},
            records,
        )
