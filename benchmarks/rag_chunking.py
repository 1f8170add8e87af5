"""Ingestion speed and chunk structure: the repo's own docs/ parsed and chunked by Conveyor
and by LlamaIndex's Markdown pipeline, same files, same tokenizer, same sizes, same run.

One command (``flock /tmp/conveyor-bench.lock .venv/bin/python benchmarks/rag_chunking.py``).

The Markdown files of ``docs/`` are copied once into a snapshot (others edit docs/ while
this runs). Each side runs ``--rounds`` times; the figures are medians over rounds:

- **Conveyor**: ``FilesSource(path=snapshot).iter_documents`` (read and parse) then
  ``chunk_documents`` (one tokenization per document) with
  ``ChunkingConfig(target_tokens=300)`` (max 450, overlap 45);
- **LlamaIndex** (``.bench-venvs/llamaindex``): ``MarkdownNodeParser`` then
  ``SentenceSplitter(chunk_size=300, chunk_overlap=45)`` counting tokens with the same
  ``tokenizer.json``, its default Markdown recipe.

Structure, checked with the same code on both sides' chunk texts: the share of fenced code
blocks (that fit in 450 tokens) found whole inside one chunk, the share of tables whole,
chunks over 450 tokens, and the chunk size distribution (tokens of the same tokenizer).

Results go to ``results/rag_chunking.json``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

sys.path.insert(0, str(harness.ROOT / "src"))

from conveyor.rag.chunking import ChunkingConfig, chunk_document, chunk_documents
from conveyor.rag.embed.tokenizer import HFTokenizer, default_model_dir
from conveyor.rag.sources import FilesSource, SourceContext
from conveyor.rag.types import Document

TARGET, OVERLAP, MAX = 300, 45, 450
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_TABLE = re.compile(r"(?:^\|.*\|[ \t]*\n){3,}", re.MULTILINE)


def structure(texts: list[str], chunks: list[str], tok: HFTokenizer) -> dict[str, Any]:
    """How the chunks treat code blocks and tables of the source texts."""
    counts = [tok.count(c) for c in chunks]
    fences = [m.group(0) for t in texts for m in _FENCE.finditer(t)]
    fences = [f for f in fences if tok.count(f) <= MAX]
    tables = [m.group(0).rstrip("\n") for t in texts for m in _TABLE.finditer(t)]
    tables = [t for t in tables if tok.count(t) <= MAX]
    joined = "\x00".join(chunks)

    def whole(pieces: list[str]) -> float:
        return sum(1 for p in pieces if p in joined) / len(pieces) if pieces else 1.0

    ordered = sorted(counts)
    return {
        "chunks": len(chunks),
        "tokens_median": statistics.median(counts),
        "tokens_p10": ordered[len(ordered) // 10],
        "tokens_p90": ordered[len(ordered) * 9 // 10],
        "tokens_max": ordered[-1],
        "over_max": sum(1 for s in counts if s > MAX),
        "code_blocks": len(fences),
        "code_blocks_whole": round(whole(fences), 4),
        "tables": len(tables),
        "tables_whole": round(whole(tables), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    tok = HFTokenizer.from_file(default_model_dir())
    config = ChunkingConfig(target_tokens=TARGET, overlap_tokens=OVERLAP, max_tokens=MAX)
    sizes = [str(TARGET), str(OVERLAP), str(args.rounds)]
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / "docs"
        snapshot.mkdir()
        for file in sorted((harness.ROOT / "docs").glob("*.md")):
            shutil.copy(file, snapshot / file.name)
        texts = [f.read_text(encoding="utf-8") for f in sorted(snapshot.glob("*.md"))]
        source = FilesSource(path=str(snapshot), include=["*.md"])
        context = SourceContext(Path(tmp))
        parse_s, chunk_s = [], []
        docs: list[Document] = []
        chunks = []
        for i in range(args.rounds):
            started = time.perf_counter()
            docs = [d for d in source.iter_documents(context) if isinstance(d, Document)]
            parse_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            chunks = chunk_documents(docs, tok, config)
            chunk_s.append(time.perf_counter() - started)
            assert chunks == [c for d in docs for c in chunk_document(d, tok, config)]
            print(f"conveyor round {i}: {len(chunks)} chunks", file=sys.stderr)
        python = harness.ensure_venv("llamaindex")
        peer = harness.run_side(
            python,
            harness.PEER_SCRIPTS / "rag_chunking_llamaindex.py",
            [str(snapshot), str(default_model_dir() / "tokenizer.json"), *sizes],
            label="llamaindex",
        )
    n_tokens = sum(c.n_tokens for c in chunks)
    total = [p + c for p, c in zip(parse_s, chunk_s, strict=True)]
    conveyor = {
        "documents": len(docs),
        "bytes": sum(len(t.encode()) for t in texts),
        "parse_s": statistics.median(parse_s),
        "chunk_s": statistics.median(chunk_s),
        "total_s": statistics.median(total),
        "chunks_per_s": round(len(chunks) / statistics.median(total)),
        "chunks_per_s_chunking_only": round(len(chunks) / statistics.median(chunk_s)),
        "chunk_tokens_per_s": round(n_tokens / statistics.median(total)),
        "structure": structure(texts, [c.text for c in chunks], tok),
    }
    peer_total = statistics.median(peer["seconds"])
    llamaindex = {
        "version": peer["version"],
        "total_s": peer_total,
        "chunks_per_s": round(len(peer["chunks"]) / peer_total),
        "structure": structure(texts, peer["chunks"], tok),
    }
    result = {
        "benchmark": "rag_chunking",
        "when": harness.timestamp(),
        "machine": harness.machine(),
        "rounds": args.rounds,
        "sizes": {"target_tokens": TARGET, "overlap_tokens": OVERLAP, "max_tokens": MAX},
        "conveyor": conveyor,
        "llamaindex": llamaindex,
        "ratios": {
            "docs_per_s_conveyor_over_llamaindex": round(peer_total / conveyor["total_s"], 2),
        },
    }
    path = harness.write_result("rag_chunking", result)
    print(
        f"conveyor: {conveyor['chunks_per_s']} chunks/s ({len(docs)} docs, "
        f"{conveyor['total_s']:.3f} s), llamaindex: {llamaindex['chunks_per_s']} chunks/s "
        f"({peer_total:.3f} s); written {path}"
    )


if __name__ == "__main__":
    main()
