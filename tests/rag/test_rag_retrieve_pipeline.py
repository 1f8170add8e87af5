"""The query pipeline (conveyor.rag.retriever) over the real ONNX encoder, the exact index
and BM25, on a small corpus: modes, filters, reranking, packing, warnings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from conveyor.errors import ConfigError, InvalidInputError, NotFittedError
from conveyor.rag.embed import EmbeddingConfig, open_embedder
from conveyor.rag.index.exact import ExactIndex
from conveyor.rag.lexical import BM25Index
from conveyor.rag.rerank import LearnedFusionReranker, Reranker
from conveyor.rag.retriever import RetrievalConfig, Retriever
from conveyor.rag.types import Chunk, Embedder

DOCS = {
    "stats/mean.md": [
        "Compute the arithmetic mean along the specified axis.",
        "The mean is the sum of the elements divided by the number of elements.",
    ],
    "linalg/svd.md": [
        "Singular value decomposition factors a matrix into U, S and Vh.",
        "The singular values are returned in descending order.",
    ],
    "ml/forest.md": [
        "A random forest fits many decision trees on bootstrap samples.",
        "Predictions average the trees, which reduces the variance of the model.",
    ],
    "ml/kmeans.md": [
        "K-means clustering partitions observations into k clusters.",
        "Each observation belongs to the cluster with the nearest centroid.",
    ],
}


def build_chunks() -> dict[int, Chunk]:
    chunks: dict[int, Chunk] = {}
    next_id = 100
    for doc_id, parts in DOCS.items():
        text = " ".join(parts)
        pos = 0
        for ordinal, part in enumerate(parts):
            start = text.index(part, pos)
            chunks[next_id] = Chunk(
                doc_id=doc_id,
                ordinal=ordinal,
                text=part,
                start=start,
                end=start + len(part),
                n_tokens=0,
                metadata={"source": doc_id, "topic": doc_id.split("/")[0]},
            )
            pos = start + len(part)
            next_id += 1
    return chunks


CHUNKS = build_chunks()


def lookup(ids: Sequence[int]) -> Mapping[int, Chunk]:
    return {i: CHUNKS[i] for i in ids if i in CHUNKS}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return open_embedder(EmbeddingConfig(threads=1))


@pytest.fixture(scope="module")
def parts(embedder: Embedder) -> tuple[ExactIndex, BM25Index]:
    ids = np.array(sorted(CHUNKS), dtype=np.int64)
    texts = [CHUNKS[i].text for i in ids.tolist()]
    index = ExactIndex(embedder.dimension)
    index.add(ids, embedder.embed(texts))
    return index, BM25Index.build(ids, texts)


def make(
    embedder: Embedder,
    parts: tuple[ExactIndex, BM25Index],
    reranker: Reranker | None = None,
    **config: object,
) -> Retriever:
    index, bm25 = parts
    cfg = RetrievalConfig.model_validate({"candidates": 8, "k": 4, **config})
    return Retriever(embedder, index, bm25, lookup, cfg, reranker=reranker)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize("fusion", ["rrf", "convex"])
def test_each_mode_finds_the_document(
    embedder: Embedder, parts: tuple[ExactIndex, BM25Index], mode: str, fusion: str
) -> None:
    retriever = make(embedder, parts, mode=mode, fusion=fusion)
    result = retriever.search("singular value decomposition of a matrix")
    assert result.hits[0].doc_id == "linalg/svd.md"
    assert result.hits[0].chunk_id == 102
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    stages = {"embed", "dense"} if mode != "bm25" else {"bm25"}
    if mode == "hybrid":
        stages |= {"bm25"}
        assert {"dense", "bm25", "fused"} <= set(result.hits[0].scores)
    assert stages | {"fuse", "lookup"} == set(result.latency_ms)
    assert all(v >= 0 for v in result.latency_ms.values())


def test_allowed_filters_every_stage(
    embedder: Embedder, parts: tuple[ExactIndex, BM25Index]
) -> None:
    retriever = make(embedder, parts)
    ml = [i for i, c in CHUNKS.items() if c.metadata["topic"] == "ml"]
    result = retriever.search("singular value decomposition of a matrix", allowed=ml)
    assert result.hits and {h.chunk_id for h in result.hits} <= set(ml)


def test_learned_reranker_fits_and_reranks(
    embedder: Embedder, parts: tuple[ExactIndex, BM25Index]
) -> None:
    base = make(embedder, parts, rerank_depth=6)
    train = [
        ("average of the values", [100, 101]),
        ("factorize a matrix", [102, 103]),
        ("ensemble of decision trees", [104, 105]),
        ("group points around centroids", [106, 107]),
    ]
    groups = [base.candidates(q) for q, _ in train]
    assert all(len(g) == 6 for g in groups)
    reranker = LearnedFusionReranker().fit(groups, [rel for _, rel in train])
    again = LearnedFusionReranker.from_dict(reranker.to_dict())
    assert again.coef_ == reranker.coef_
    retriever = make(embedder, parts, reranker=again, rerank=True, rerank_depth=6)
    result = retriever.search("partition observations into clusters", k=6)
    assert result.hits[0].doc_id == "ml/kmeans.md"
    assert "rerank" in result.latency_ms and "rerank" in result.hits[0].scores
    with pytest.raises(NotFittedError):
        LearnedFusionReranker().rerank("q", ["t"])


def test_reranked_search_looks_each_chunk_up_once(
    embedder: Embedder, parts: tuple[ExactIndex, BM25Index]
) -> None:
    """The rerank stage reads the candidates' texts; the hits are built from those same
    records, not from a second lookup of the same ids (a query to the store per query)."""
    asked: list[list[int]] = []

    def counting(ids: Sequence[int]) -> Mapping[int, Chunk]:
        asked.append(list(ids))
        return lookup(ids)

    index, bm25 = parts
    config = RetrievalConfig(candidates=8, k=4, rerank=True, rerank_depth=6)
    reranker = LearnedFusionReranker([1.0, 0.0, 0.0, 0.0, 0.0])
    retriever = Retriever(embedder, index, bm25, counting, config, reranker=reranker)
    result = retriever.search("partition observations into clusters", k=4)
    assert result.hits[0].doc_id == "ml/kmeans.md"
    assert len(asked) == 1 and len(asked[0]) == 6
    # below the rerank depth, the hits not yet read are looked up (once)
    asked.clear()
    deep = retriever.search("partition observations into clusters", k=8)
    assert len(deep.hits) == 8
    flat = [i for ids in asked for i in ids]
    assert sorted(flat) == sorted({h.chunk_id for h in deep.hits}) and len(asked) == 2


def test_context_packs_with_citations(
    embedder: Embedder, parts: tuple[ExactIndex, BM25Index]
) -> None:
    retriever = make(embedder, parts, k=4)
    ctx = retriever.context("how is the mean computed?", 200)
    assert ctx.context.tokens <= 200
    first = ctx.context.citations[0]
    assert first.doc_id == "stats/mean.md"
    # the two chunks of the mean document touch: merged into one passage, whole document
    whole = " ".join(DOCS["stats/mean.md"])
    assert (first.start, first.end) == (0, len(whole))
    assert whole in ctx.context.text
    assert "pack" in ctx.latency_ms
    compressed = make(embedder, parts, k=4, compress=True).context("mean", 200)
    assert compressed.context.tokens <= 200


def test_long_query_is_truncated_with_a_warning(
    embedder: Embedder, parts: tuple[ExactIndex, BM25Index]
) -> None:
    retriever = make(embedder, parts)
    query = "singular value decomposition " + "matrix " * 600
    result = retriever.search(query)
    assert result.hits[0].doc_id == "linalg/svd.md"
    assert len(result.warnings) == 1 and "query truncated" in result.warnings[0]
    assert retriever.search("mean").warnings == []


def test_misconfiguration_is_refused(
    embedder: Embedder, parts: tuple[ExactIndex, BM25Index]
) -> None:
    _, bm25 = parts
    with pytest.raises(ConfigError, match="dimension"):
        Retriever(embedder, ExactIndex(128), bm25, lookup)
    with pytest.raises(ConfigError, match="needs a BM25 index"):
        Retriever(embedder, parts[0], None, lookup)
    with pytest.raises(ConfigError, match="no reranker"):
        make(embedder, parts, rerank=True)
    with pytest.raises(ValueError, match="candidates"):
        RetrievalConfig(k=20, candidates=10)
    with pytest.raises(InvalidInputError, match="empty"):
        make(embedder, parts).search("   ")
    variant = make(embedder, parts).with_config(fusion="rrf", k=2)
    assert (variant.config.fusion, variant.config.k, variant.config.candidates) == ("rrf", 2, 8)
    assert len(variant.search("mean").hits) == 2
    with pytest.raises(ValueError, match="mode"):
        make(embedder, parts).with_config(mode="sparse")
    bm25_only = Retriever(None, None, bm25, lookup, RetrievalConfig(mode="bm25"))
    assert bm25_only.search("random forest").hits[0].doc_id == "ml/forest.md"


def test_bm25_only_packs_with_the_model_tokenizer(parts: tuple[ExactIndex, BM25Index]) -> None:
    _, bm25 = parts
    retriever = Retriever(None, None, bm25, lookup, RetrievalConfig(mode="bm25", budget_tokens=40))
    ctx = retriever.context("decision trees bootstrap")
    assert ctx.context.citations[0].doc_id == "ml/forest.md"
    assert 0 < ctx.context.tokens <= 40
    with pytest.raises(InvalidInputError, match="budget"):
        retriever.context("decision trees", 0)
