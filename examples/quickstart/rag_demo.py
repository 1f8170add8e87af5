"""The quickstart's RAG step: Conveyor's own documentation as a versioned collection.

1. ``conveyor.rag.build("docs")``: the Markdown files of the repository's ``docs/`` folder
   are parsed, chunked with the encoder's tokenizer, embedded (all-MiniLM-L6-v2 on ONNX
   Runtime, INT8), indexed (vectors and BM25) into version 1, gated on 18 labelled
   questions (``docs_eval.jsonl``) and put live;
2. a question answered with citations (document, section, character offsets) and the
   score of each stage (dense, BM25, fused);
3. the same question packed into a 300-token context for a prompt;
4. a rebuild with nothing changed re-embeds nothing (the build is incremental);
5. the evaluation table: nDCG@10, recall@10, MRR and the latency of each stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import conveyor
import conveyor.rag

HERE = Path(__file__).resolve().parent
#: The collection's source: the repository's own documentation.
DOCS = HERE.parent.parent / "docs"

RAG_SPEC = """
rag:
  collections:
    docs:
      sources:
        - {kind: files, path: "%s", include: ["*.md"], recursive: false}
      gate: {eval_set: docs_eval.jsonl, tolerance: 0.02}
"""

QUESTION = "how do I roll back a model to the previous version?"


def rag_spec() -> str:
    """The ``rag:`` section of the quickstart's ``conveyor.yaml``."""
    return RAG_SPEC % DOCS.as_posix()


def run_rag(project: conveyor.Project, console: Console, *, step: str) -> dict[str, Any]:
    """Build, search, pack, rebuild and evaluate the ``docs`` collection."""
    from conveyor.rag.api import evaluate_version
    from conveyor.rag.collections import Collections

    built = conveyor.rag.build("docs", actor="quickstart", project=project)
    counts, gate = built.counts, built.gate or {}
    console.print(
        f"[green]{step}[/] RAG: docs@{built.version.number} built from {counts['documents']} "
        f"documents, {counts['chunks']} chunks ({counts['embedded_chunks']} embedded), "
        f"{len(built.failures)} parse failures; gate nDCG@10 {gate.get('ndcg@10', 0):.3f} on "
        f"{gate.get('candidate', {}).get('n_queries', 0)} labelled questions: "
        f"{'passed' if gate.get('passed') else 'refused'}; alias {built.alias} "
        f"{'moved' if built.moved else 'stayed'}"
    )

    found = conveyor.rag.search("docs", QUESTION, k=3, project=project)
    table = Table(title=f"“{QUESTION}”", title_justify="left")
    for column in ("score", "dense", "bm25", "document", "section", "chars"):
        table.add_column(column)
    for hit in found["hits"]:
        cite, scores = hit["citation"], hit["scores"]
        table.add_row(
            f"{hit['score']:.3f}",
            f"{scores.get('dense', float('nan')):.3f}",
            f"{scores.get('bm25', float('nan')):.2f}",
            str(cite["doc_id"]),
            str(cite.get("section") or "")[:48],
            f"{cite['start']}-{cite['end']}",
        )
    console.print(table)

    packed = conveyor.rag.context("docs", QUESTION, budget_tokens=300, project=project)
    context = packed["context"]
    console.print(
        f"    context for a prompt: {context['tokens']} tokens (budget 300) from "
        f"{len(context['citations'])} cited passage(s); the first search (which loads the "
        f"version) took {found['latency_ms']['total']:.1f} ms"
    )

    again = conveyor.rag.build("docs", actor="quickstart", project=project)
    console.print(
        f"    rebuilt with nothing changed: docs@{again.version.number}, "
        f"{again.counts['embedded_chunks']} chunks embedded, "
        f"{again.counts['reused_chunks']} reused"
    )

    version = project.service("rag", Collections).version("docs", "live")
    result = evaluate_version(project, version)
    scores = Table(title=f"docs@{version.number} on {result.n_queries} labelled questions")
    for column in ("nDCG@10", f"recall@{result.k}", "MRR"):
        scores.add_column(column)
    scores.add_row(f"{result.ndcg_at_10:.3f}", f"{result.recall_at_k:.3f}", f"{result.mrr:.3f}")
    console.print(scores)
    stages = ", ".join(
        f"{stage} {values['median']:.1f}" for stage, values in result.latency_ms.items()
    )
    console.print(f"    median latency per stage (ms): {stages}")
    return {
        "built": built.to_dict(),
        "rebuilt": again.to_dict(),
        "search": found,
        "context": packed,
        "eval": result.to_dict(),
    }
