"""Embedding ingestion: docs/s and retrieval quality of the default encoder, fp32 and INT8
ONNX Runtime against sentence-transformers on torch, same documents, same run.

One command (``flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/rag_embedding.py``).

The documents are the built-in known-item set (:func:`conveyor.rag.known_items.docstring_set`:
public numpy, scipy and scikit-learn docstrings, query = the summary line, relevant
document = the rest of the docstring), the same set the retrieval evaluation uses; their
token counts (before the model's 256-token truncation) are reported.

Speed: in each of ``--rounds`` short rounds every encoder embeds the same ``--timing-docs``
documents, in an order rotated each round, so a change in the machine's load (it is shared)
hits every encoder alike; the speed-up is the ratio within a round, median over rounds,
and the load average of each round is recorded. The encoders, all with the same 2 threads
and batch 32:

- **sentence-transformers** on torch CPU (``SentenceTransformer.encode``, which also sorts
  by length), the reference and the issue's peer (22.8 docs/s measured before);
- **Conveyor ONNX fp32**: ``open_embedder(EmbeddingConfig(quantize="none"))``;
- **Conveyor ONNX int8**: ``open_embedder(EmbeddingConfig())`` (the default);
- **Conveyor torch bf16**: ``EmbeddingConfig(backend="sentence-transformers",
  precision="bfloat16", compile=True)``: the same model in bfloat16 through
  ``torch.compile``, for CPUs with AMX or AVX512-BF16 (its first batch, the compile, is
  timed apart as ``compile_once_s``).

Quality: dense retrieval of every query over the corpus, exact cosine search (a matrix
product), nDCG@10 with the one relevant document; the int8 row's loss against
sentence-transformers is the figure the issue bounds (at most 0.01). Also the cosine
agreement of each ONNX variant's document vectors with sentence-transformers', and the
one-off cost of the export (into an empty cache folder).

Results go to ``results/rag_embedding.json`` (``--out NAME``: ``results/NAME.json``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np

sys.path.insert(0, str(harness.ROOT / "src"))

from conveyor.rag.embed import EmbeddingConfig, open_embedder
from conveyor.rag.embed.export import model_files
from conveyor.rag.embed.sentence_transformers import SentenceTransformerEmbedder
from conveyor.rag.embed.tokenizer import HFTokenizer, default_model_dir

THREADS = 2
BATCH = 32
K = 10


def corpus(size: int) -> tuple[list[str], list[str], dict[str, str]]:
    """(queries, documents, library versions): query i's relevant document is document i."""
    try:
        from conveyor.rag.known_items import docstring_set
    except ImportError:  # the evaluation part not there: the same recipe, by hand
        return _own_corpus(size)
    items = docstring_set(size)
    return [i.query for i in items.items], [i.document for i in items.items], items.versions


def _own_corpus(size: int) -> tuple[list[str], list[str], dict[str, str]]:
    import importlib
    import inspect

    out: dict[str, tuple[str, str]] = {}
    for name in ("numpy", "numpy.linalg", "scipy.linalg", "scipy.stats", "sklearn.linear_model"):
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", dir(module)):
            doc = inspect.getdoc(getattr(module, attr, None)) or ""
            summary, _, body = doc.strip().partition("\n\n")
            if summary and len(body) > 200 and "\n" not in summary:
                out.setdefault(summary, (summary, body))
    pairs = sorted(out.values())[:size]
    return [q for q, _ in pairs], [d for _, d in pairs], {}


def ndcg_at_10(queries: np.ndarray, docs: np.ndarray) -> float:
    """Mean nDCG@10 with one relevant document per query (query i -> document i)."""
    scores = queries @ docs.T
    own = scores[np.arange(len(scores)), np.arange(len(scores))]
    ranks = (scores > own[:, None]).sum(axis=1) + 1  # 1-based rank of the relevant doc
    gains = np.where(ranks <= K, 1.0 / np.log2(ranks + 1), 0.0)
    return float(gains.mean())


def timed(embed: Any, texts: list[str]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    vectors = embed(texts)
    return time.perf_counter() - start, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=400, help="documents (and queries)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds")
    parser.add_argument("--timing-docs", type=int, default=96, help="documents a round")
    parser.add_argument("--out", default="rag_embedding", help="results/<out>.json")
    args = parser.parse_args()

    queries, docs, versions = corpus(args.docs)
    tokenizer = HFTokenizer.from_file(default_model_dir())
    counts = tokenizer.count_many(docs)
    print(
        f"{len(docs)} documents, tokens mean {statistics.mean(counts):.0f} "
        f"median {statistics.median(counts):.0f}",
        flush=True,
    )

    # The one-off export (torch -> ONNX, fusion, int8) into an empty cache folder.
    files = model_files(default_model_dir(), "all-MiniLM-L6-v2")
    with tempfile.TemporaryDirectory() as cold:
        start = time.perf_counter()
        open_embedder(EmbeddingConfig(threads=THREADS), cache_dir=Path(cold))
        export_s = time.perf_counter() - start

    encoders: dict[str, Any] = {
        "sentence-transformers": SentenceTransformerEmbedder(
            files, batch_size=BATCH, threads=THREADS
        ),
        "conveyor-onnx-fp32": open_embedder(
            EmbeddingConfig(quantize="none", threads=THREADS, batch_size=BATCH)
        ),
        "conveyor-onnx-int8": open_embedder(
            EmbeddingConfig(quantize="int8", threads=THREADS, batch_size=BATCH)
        ),
        "conveyor-torch-bf16": open_embedder(
            EmbeddingConfig(
                backend="sentence-transformers",
                precision="bfloat16",
                compile=True,
                threads=THREADS,
                batch_size=BATCH,
            )
        ),
    }
    start = time.perf_counter()
    encoders["conveyor-torch-bf16"].embed(docs[:40])  # the compile, at the first batch
    compile_s = time.perf_counter() - start
    for encoder in encoders.values():  # warm-up: first-call allocations, thread pools
        encoder.embed(docs[:8])

    # Quality: every encoder embeds the whole corpus and every query once.
    vectors = {name: e.embed(docs) for name, e in encoders.items()}
    query_vectors = {name: e.embed(queries) for name, e in encoders.items()}

    # Speed: short rounds, the encoders' order rotated each round, so a change in the
    # machine's load (it is shared) hits every encoder alike; the ratio is taken within
    # each round, then the median over rounds.
    timing_docs = docs[: args.timing_docs]
    names = list(encoders)
    rates: dict[str, list[float]] = {name: [] for name in names}
    loads: list[float] = []
    for r in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for name in names[r % len(names) :] + names[: r % len(names)]:
            took, _ = timed(encoders[name].embed, timing_docs)
            rates[name].append(len(timing_docs) / took)
            print(f"round {r + 1} {name}: {rates[name][-1]:.1f} docs/s", flush=True)

    reference = vectors["sentence-transformers"]
    st_rates = rates["sentence-transformers"]
    rows: dict[str, Any] = {}
    for name, encoder in encoders.items():
        cosine = (vectors[name] * reference).sum(axis=1)
        ratios = [a / b for a, b in zip(rates[name], st_rates, strict=True)]
        rows[name] = {
            "model": encoder.model,
            "docs_per_s_median": round(statistics.median(rates[name]), 2),
            "docs_per_s_best": round(max(rates[name]), 2),
            "docs_per_s_rounds": [round(x, 2) for x in rates[name]],
            "speedup_vs_st": round(statistics.median(ratios), 2),
            "speedup_vs_st_rounds": [round(x, 2) for x in ratios],
            "ndcg_at_10": round(ndcg_at_10(query_vectors[name], vectors[name]), 4),
            "cosine_to_st_min": round(float(cosine.min()), 6),
            "cosine_to_st_mean": round(float(cosine.mean()), 6),
        }
    st = rows["sentence-transformers"]
    for row in rows.values():
        row["ndcg_loss_vs_st"] = round(st["ndcg_at_10"] - row["ndcg_at_10"], 4)

    import onnxruntime
    import sentence_transformers
    import torch

    result = {
        "benchmark": "rag_embedding",
        "when": harness.timestamp(),
        "machine": harness.machine(),
        "settings": {
            "threads": THREADS,
            "batch_size": BATCH,
            "rounds": args.rounds,
            "timing_docs": len(docs[: args.timing_docs]),
            "load_average_1m_per_round": [round(x, 2) for x in loads],
            "documents": len(docs),
            "max_seq_length": files.max_seq_length,
            "doc_tokens_mean": round(statistics.mean(counts), 1),
            "doc_tokens_median": statistics.median(counts),
            "doc_tokens_over_256": sum(1 for c in counts if c + 2 > files.max_seq_length),
            "corpus": "conveyor.rag.known_items.docstring_set" if versions else "inspect.getdoc",
            "library_versions": versions,
        },
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "export_once_s": round(export_s, 2),
        "compile_once_s": round(compile_s, 2),
        "encoders": rows,
        "target": {
            "speedup_vs_st_at_least": 3.0,
            "ndcg_loss_at_most": 0.01,
            "met_by": [
                name
                for name, row in rows.items()
                if name.startswith("conveyor")
                and row["speedup_vs_st"] >= 3.0
                and row["ndcg_loss_vs_st"] <= 0.01
            ],
        },
    }
    assert not math.isnan(st["ndcg_at_10"])
    path = harness.write_result(args.out, result)
    for name, row in rows.items():
        print(
            f"{name:24s} {row['docs_per_s_median']:7.1f} docs/s  x{row['speedup_vs_st']:.2f}  "
            f"nDCG@10 {row['ndcg_at_10']:.4f} (loss {row['ndcg_loss_vs_st']:+.4f})  "
            f"min cos {row['cosine_to_st_min']:.4f}"
        )
    print(f"export once: {export_s:.1f} s; compile once: {compile_s:.1f} s; written {path}")


if __name__ == "__main__":
    main()
