"""Retrieval quality on the built-in docstring known-item set: every stage of the query path.

One command (``flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/rag_quality.py``):

1. the set (:func:`conveyor.rag.known_items.docstring_set`, 2,000 numpy / scipy /
   scikit-learn docstrings: query = summary line, relevant = the rest) is split by name hash
   into a dev part (30%, for every choice and every fitted number) and a test part (70%,
   reported);
2. the documents are embedded with all-MiniLM-L6-v2 through Conveyor's default encoder
   (``open_embedder(EmbeddingConfig())``: ONNX Runtime, INT8) or ``--embedder
   sentence-transformers`` (torch, float32), into the exact index (``exact://``), so the
   figures measure retrieval, not an approximate index; BM25 is :class:`BM25Index`;
3. on the dev queries: the BM25 analyzer variants are compared, the convex weight is tuned
   for min-max and for z-score normalization (:func:`tune_weight`), and the learned fusion
   reranker is fitted on the convex candidates;
4. on the test queries, through :class:`Retriever` (so the per-stage latency is the real
   path): BM25, dense, RRF (k=60), convex (each normalization, its dev-tuned weight), and
   convex + reranking; nDCG@10, recall@10, MRR@10 and the median and p95 of each stage.

The query path runs with one encoder thread (``--threads``). Results go to
``results/rag_quality.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine, timestamp, write_result

CACHE = Path("/tmp/conveyor-rag-quality")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000, help="documents (and queries)")
    parser.add_argument("--embedder", choices=("onnx", "sentence-transformers"), default="onnx")
    parser.add_argument("--threads", type=int, default=1, help="encoder threads at query time")
    parser.add_argument("--depth", type=int, default=50, help="candidates per stage")
    parser.add_argument("--rerank-depth", type=int, default=30)
    parser.add_argument("--budget", type=int, default=512, help="packing budget (tokens)")
    parser.add_argument("--pack-queries", type=int, default=300)
    parser.add_argument("--out", default="rag_quality")
    args = parser.parse_args()

    from conveyor.rag.embed import EmbeddingConfig, open_embedder
    from conveyor.rag.evaluation import evaluate, hits_run, ndcg_at_k
    from conveyor.rag.fusion import tune_weight
    from conveyor.rag.index.exact import ExactIndex
    from conveyor.rag.known_items import docstring_set
    from conveyor.rag.lexical import ANALYZERS, DEFAULT_ANALYZER, BM25Index
    from conveyor.rag.rerank import LearnedFusionReranker
    from conveyor.rag.retriever import RetrievalConfig, Retriever
    from conveyor.rag.types import Chunk

    t0 = time.perf_counter()
    kset = docstring_set(args.size)
    set_s = time.perf_counter() - t0
    dev, test = kset.split(0.3)
    print(
        f"docstring set: {len(kset)} documents in {set_s:.1f} s; {len(dev)} dev / "
        f"{len(test)} test queries; versions {kset.versions}"
    )

    backend = "sentence-transformers" if args.embedder == "sentence-transformers" else "onnx"
    doc_encoder = open_embedder(EmbeddingConfig(backend=backend, threads=2))
    vectors, embed_info = _doc_vectors(doc_encoder, kset.texts)
    print(f"documents embedded: {embed_info}")
    query_encoder = open_embedder(EmbeddingConfig(backend=backend, threads=args.threads))

    ids = np.asarray(kset.ids, dtype=np.int64)
    index = ExactIndex(query_encoder.dimension)
    index.add(ids, vectors)
    chunks = {
        item.id: Chunk(item.name, 0, item.document, 0, len(item.document), 0, {"source": item.name})
        for item in kset.items
    }

    def lookup(wanted: Any) -> dict[int, Chunk]:
        return {i: chunks[i] for i in wanted if i in chunks}

    # -- dev: BM25 analyzers --------------------------------------------------------------
    analyzers: dict[str, float] = {}
    bm25_by: dict[str, BM25Index] = {}
    for name in ANALYZERS:
        t0 = time.perf_counter()
        bm = BM25Index.build(ids, kset.texts, analyzer=name)
        build_s = time.perf_counter() - t0
        bm25_by[name] = bm
        score = float(
            np.mean([ndcg_at_k(bm.search(q.query, 10)[1].tolist(), q.relevant) for q in dev])
        )
        analyzers[name] = round(score, 4)
        print(f"BM25 analyzer {name!r}: dev nDCG@10 {score:.4f} (built in {build_s:.1f} s)")
    bm25 = bm25_by[DEFAULT_ANALYZER]

    # -- dev: convex weight per normalization ----------------------------------------------
    dev_pairs = []
    for q in dev:
        qv = query_encoder.embed([q.query])
        d_scores, d_ids = index.search(qv, args.depth)
        dev_pairs.append(((d_scores[0], d_ids[0]), bm25.search(q.query, args.depth)))
    curves = {
        norm: tune_weight(dev_pairs, [list(q.relevant) for q in dev], normalization=norm)
        for norm in ("minmax", "zscore")
    }
    for norm, curve in curves.items():
        print(
            f"convex {norm}: best dense weight {curve.best_weight} (dev nDCG@10 "
            f"{curve.best_score:.4f})"
        )
    best_norm = max(curves, key=lambda n: curves[n].best_score)

    base = {"candidates": args.depth, "k": 10, "rerank_depth": args.rerank_depth}
    convex_cfg = {
        **base,
        "mode": "hybrid",
        "fusion": "convex",
        "normalization": best_norm,
        "weight": curves[best_norm].best_weight,
    }

    # -- dev: the learned fusion reranker ---------------------------------------------------
    convex_retriever = Retriever(
        query_encoder, index, bm25, lookup, RetrievalConfig.model_validate(convex_cfg)
    )
    t0 = time.perf_counter()
    groups = [convex_retriever.candidates(q.query) for q in dev]
    reranker = LearnedFusionReranker().fit(groups, [list(q.relevant) for q in dev])
    fit_s = time.perf_counter() - t0
    print(f"learned fusion reranker fitted on {reranker.trained_on} in {fit_s:.1f} s")

    # -- test: every configuration through the retriever ------------------------------------
    configs: dict[str, dict[str, Any]] = {
        "bm25": {**base, "mode": "bm25"},
        "dense": {**base, "mode": "dense"},
        "rrf": {**base, "mode": "hybrid", "fusion": "rrf"},
    }
    for norm, curve in curves.items():
        configs[f"convex-{norm}"] = {
            **base,
            "mode": "hybrid",
            "fusion": "convex",
            "normalization": norm,
            "weight": curve.best_weight,
        }
    configs["convex+rerank"] = {**convex_cfg, "rerank": True}
    configs["rrf+rerank"] = {**base, "mode": "hybrid", "fusion": "rrf", "rerank": True}

    results: dict[str, Any] = {}
    per_query: dict[str, np.ndarray] = {}
    for name, cfg in configs.items():
        rr = reranker if cfg.get("rerank") else None
        if name == "rrf+rerank":
            rrf_ret = Retriever(
                query_encoder,
                index,
                bm25,
                lookup,
                RetrievalConfig.model_validate(cfg | {"rerank": False}),
            )
            rr = LearnedFusionReranker().fit(
                [rrf_ret.candidates(q.query) for q in dev], [list(q.relevant) for q in dev]
            )
        retriever = Retriever(
            query_encoder, index, bm25, lookup, RetrievalConfig.model_validate(cfg), reranker=rr
        )

        def search(query: str, retriever: Retriever = retriever) -> Any:
            found = retriever.search(query)
            return found.hits, found.latency_ms

        res = evaluate(hits_run(search), test, k=10)
        per_query[name] = np.asarray(res.per_query_ndcg)
        results[name] = {"config": cfg, **res.to_dict()}
        print(
            f"{name:15s} nDCG@10 {res.ndcg_at_10:.4f}  recall@10 {res.recall_at_k:.4f}  "
            f"MRR {res.mrr:.4f}  total median {res.latency_ms['total']['median']:.2f} ms  "
            + "  ".join(f"{s} {v['median']:.2f}" for s, v in res.latency_ms.items() if s != "total")
        )

    # -- test: context packing (budget 512 tokens) on the convex configuration ---------------
    packer = Retriever(
        query_encoder, index, bm25, lookup, RetrievalConfig.model_validate(convex_cfg)
    )
    pack_ms: list[float] = []
    tokens: list[int] = []
    passages: list[int] = []
    for q in test[: args.pack_queries]:
        ctx = packer.context(q.query, args.budget)
        pack_ms.append(ctx.latency_ms["pack"])
        tokens.append(ctx.context.tokens)
        passages.append(len(ctx.context.citations))
    packing = {
        "queries": len(pack_ms),
        "budget_tokens": args.budget,
        "pack_ms_median": round(float(np.median(pack_ms)), 3),
        "pack_ms_p95": round(float(np.percentile(pack_ms, 95)), 3),
        "tokens_median": int(np.median(tokens)),
        "tokens_max": int(max(tokens)),
        "passages_median": float(np.median(passages)),
    }
    print(f"packing: {packing}")

    # paired bootstrap (queries resampled) of nDCG@10 differences that the write-up cites
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(test), size=(2000, len(test)))
    paired: dict[str, Any] = {}
    for a, b in (
        ("convex+rerank", f"convex-{best_norm}"),
        ("convex+rerank", "rrf"),
        (f"convex-{best_norm}", "rrf"),
        ("convex-minmax", "convex-zscore"),
        ("rrf", "bm25"),
    ):
        diff = per_query[a] - per_query[b]
        boots = diff[draws].mean(axis=1)
        paired[f"{a} - {b}"] = {
            "difference": round(float(diff.mean()), 4),
            "ci95": [
                round(float(np.percentile(boots, 2.5)), 4),
                round(float(np.percentile(boots, 97.5)), 4),
            ],
        }
        print(f"{a} - {b}: {diff.mean():+.4f} (95% CI {paired[f'{a} - {b}']['ci95']})")

    best_hybrid = results["convex+rerank"]["ndcg@10"]
    data = {
        "benchmark": "rag_quality",
        "timestamp": timestamp(),
        "machine": machine(),
        "set": {
            "size": len(kset),
            "dev_queries": len(dev),
            "test_queries": len(test),
            "versions": kset.versions,
            "build_s": round(set_s, 2),
        },
        "embedder": {"model": query_encoder.model, "backend": backend, **embed_info},
        "query_threads": args.threads,
        "depth": args.depth,
        "rerank_depth": args.rerank_depth,
        "dev": {
            "bm25_analyzers_ndcg@10": analyzers,
            "convex_curves": {n: c.to_dict() for n, c in curves.items()},
            "chosen_normalization": best_norm,
            "reranker": reranker.to_dict(),
        },
        "test": results,
        "packing": packing,
        "paired_bootstrap_ndcg@10": paired,
        "targets": {
            "hybrid_rerank_ndcg@10_at_least_0.66": best_hybrid >= 0.66,
            "hybrid_rerank_not_below_rrf": best_hybrid >= results["rrf"]["ndcg@10"],
        },
        "reference_figures_issue": {"bm25": 0.553, "dense": 0.544, "rrf": 0.617, "convex": 0.630},
    }
    path = write_result(args.out, data)
    print(f"wrote {path}")


def _doc_vectors(encoder: Any, texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The documents' vectors, cached in /tmp by encoder and texts (the embedding is not
    what this benchmark measures; ``benchmarks/rag_embedding.py`` is)."""
    digest = hashlib.sha256(
        json.dumps([encoder.model, texts], ensure_ascii=False).encode()
    ).hexdigest()[:16]
    file = CACHE / f"{digest}.npy"
    if file.is_file():
        return np.load(file), {"cached": True, "docs": len(texts)}
    t0 = time.perf_counter()
    vectors = encoder.embed(texts)
    seconds = time.perf_counter() - t0
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(file, vectors)
    return vectors, {
        "cached": False,
        "docs": len(texts),
        "seconds": round(seconds, 1),
        "docs_per_s": round(len(texts) / seconds, 1),
    }


if __name__ == "__main__":
    main()
