"""LlamaIndex's side of ``benchmarks/rag_chunking.py``, run in ``.bench-venvs/llamaindex``.

Reads the snapshot of Markdown files, splits each with LlamaIndex's usual Markdown pipeline
(``MarkdownNodeParser`` by headers, then ``SentenceSplitter`` with the same chunk size and
overlap, counting tokens with the same ``tokenizer.json``), ``rounds`` times, and prints the
seconds per round and every chunk's text (for the structure checks, made on Conveyor's side
with the same code for both).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from llama_index.core import Document
from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter
from tokenizers import Tokenizer
from workload import emit_result


def main() -> None:
    folder, tokenizer_file = Path(sys.argv[1]), sys.argv[2]
    size, overlap, rounds = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    tok = Tokenizer.from_file(tokenizer_file)
    tok.no_padding()
    tok.no_truncation()

    def count(text: str) -> list[int]:
        ids: list[int] = tok.encode(text, add_special_tokens=False).ids
        return ids

    files = sorted(folder.glob("*.md"))
    seconds = []
    chunks: list[tuple[str, str]] = []
    for _ in range(rounds):
        started = time.perf_counter()
        docs = [Document(text=f.read_text(encoding="utf-8"), id_=f.name) for f in files]
        sections = MarkdownNodeParser().get_nodes_from_documents(docs)
        splitter = SentenceSplitter(chunk_size=size, chunk_overlap=overlap, tokenizer=count)
        nodes = splitter.get_nodes_from_documents(sections)
        seconds.append(time.perf_counter() - started)
        chunks = [(n.ref_doc_id or "", n.get_content()) for n in nodes]
        print(f"llamaindex: {len(nodes)} chunks in {seconds[-1]:.3f} s", file=sys.stderr)
    import llama_index.core

    emit_result(
        {
            "version": llama_index.core.__version__,
            "seconds": seconds,
            "chunks": [text for _, text in chunks],
        }
    )


if __name__ == "__main__":
    main()
