"""Chunking with the embedding model's real tokenizer: sizes within bounds, structure kept,
overlap inside a section, exact citations, the same chunks every time."""

from __future__ import annotations

import itertools
import random

import pytest
from pydantic import ValidationError

from conveyor.rag.chunking import ChunkingConfig, chunk_document, chunk_documents
from conveyor.rag.embed.tokenizer import HFTokenizer, default_model_dir
from conveyor.rag.parsing import parse_bytes
from conveyor.rag.types import Block, Chunk, Document

CONFIG = ChunkingConfig(target_tokens=200, max_tokens=300, overlap_tokens=30, min_tokens=40)
WORDS = tuple(
    [
        "model",
        "data",
        "version",
        "pipeline",
        "feature",
        "drift",
        "registry",
        "alias",
        "rollout",
        "latency",
        "batch",
        "stream",
        "cache",
        "index",
        "vector",
        "query",
        "token",
        "chunk",
        "section",
        "schema",
        "quarantine",
        "budget",
        "replica",
        "shard",
        "the",
        "a",
        "of",
        "to",
        "and",
        "in",
        "is",
        "for",
        "with",
        "on",
        "by",
        "that",
        "this",
        "from",
    ]
)


@pytest.fixture(scope="module")
def tokenizer() -> HFTokenizer:
    return HFTokenizer.from_file(default_model_dir())


def prose(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def code(rng: random.Random, lines: int) -> str:
    body = "\n".join(
        f"    value_{i} = compute({rng.choice(WORDS)!r}, limit={rng.randint(1, 999)})"
        for i in range(lines)
    )
    return f"```python\ndef build():\n{body}\n```"


def guide(seed: int = 7) -> Document:
    rng = random.Random(seed)
    parts = [
        "# Guide",
        prose(rng, 3),
        "## Short section",
        prose(rng, 2),
        "## Long section",
        *(prose(rng, rng.randint(3, 6)) for _ in range(8)),
        code(rng, 12),  # about 200 tokens: fits max, never split
        prose(rng, 4),
        "| key | value |\n|-----|-------|\n" + "\n".join(f"| k{i} | v{i} |" for i in range(12)),
        "## Very long paragraph",
        prose(rng, 60),  # far over max_tokens: split at sentence ends
        "## Giant line",
        "/".join(rng.choice(WORDS) for _ in range(500)),  # no sentence end, no line end
        "### Tail",
        prose(rng, 2),
    ]
    doc = parse_bytes("\n\n".join(parts).encode(), doc_id="guide.md", source="docs/guide.md")
    assert isinstance(doc, Document)
    return doc


def section_at(doc: Document, char: int) -> tuple[str, ...]:
    return next(b.section for b in doc.blocks if b.start <= char < b.end)


def holding(chunks: list[Chunk], block: Block) -> list[Chunk]:
    return [c for c in chunks if c.start <= block.start and block.end <= c.end]


def test_chunks_are_exact_citations_within_bounds(tokenizer: HFTokenizer) -> None:
    doc = guide()
    chunks = chunk_document(doc, tokenizer, CONFIG)
    assert len(chunks) > 10
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.doc_id == "guide.md"
        assert chunk.text == doc.text[chunk.start : chunk.end]
        assert chunk.text == chunk.text.strip()
        assert chunk.n_tokens <= CONFIG.max_tokens
        assert tokenizer.count(chunk.text) <= CONFIG.max_tokens
    for chunk in chunks[:-1]:
        assert chunk.n_tokens >= CONFIG.min_tokens, chunk
    # Token counts are the model tokenizer's own on the chunk text (cuts at word starts).
    prose_chunks = [c for c in chunks if "Giant" not in c.metadata["section"]]
    assert all(c.n_tokens == tokenizer.count(c.text) for c in prose_chunks)
    # Chunks in order, covering every block.
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    for block in doc.blocks:
        assert any(c.start <= block.start < c.end for c in chunks)


def test_structure_is_kept(tokenizer: HFTokenizer) -> None:
    doc = guide()
    chunks = chunk_document(doc, tokenizer, CONFIG)
    cuts = {c.end for c in chunks}
    for i, block in enumerate(doc.blocks):
        tokens = tokenizer.count(doc.text[block.start : block.end])
        if tokens > CONFIG.max_tokens:
            continue
        assert holding(chunks, block), f"{block.kind} block split though it fits: {block}"
        # No chunk ends inside a block that fits; none starts inside a code block or table.
        assert not any(block.start < end < block.end for end in cuts)
        if block.kind in ("code", "table", "list"):
            assert not any(block.start < c.start < block.end for c in chunks)
        # A heading is never the last thing in a chunk: its first paragraph comes with it.
        if block.kind == "heading" and i + 1 < len(doc.blocks):
            assert block.end not in cuts
            following = doc.blocks[i + 1]
            assert any(c.start <= block.start and following.start < c.end for c in chunks)
    code = next(b for b in doc.blocks if b.kind == "code")
    assert tokenizer.count(doc.text[code.start : code.end]) > CONFIG.target_tokens * 0.6


def test_long_blocks_are_split_at_sentences_then_tokens(tokenizer: HFTokenizer) -> None:
    doc = guide()
    chunks = chunk_document(doc, tokenizer, CONFIG)
    long_para, giant = (
        b for b in doc.blocks if tokenizer.count(doc.text[b.start : b.end]) > CONFIG.max_tokens
    )
    inside = [c for c in chunks if long_para.start <= c.start < long_para.end]
    assert len(inside) >= 3
    for chunk in inside[:-1]:
        assert chunk.text.endswith("."), chunk.text[-40:]  # cut at a sentence end
    pieces = [c for c in chunks if c.start < giant.end and c.end > giant.start]
    assert len(pieces) >= 3
    assert all(c.n_tokens <= CONFIG.max_tokens for c in pieces)
    assert pieces[0].start <= giant.start and pieces[-1].end >= giant.end
    assert all(c.end <= giant.end for c in pieces[:-1])  # each cut inside the line


def test_overlap_within_a_section_only(tokenizer: HFTokenizer) -> None:
    doc = guide()
    chunks = chunk_document(doc, tokenizer, CONFIG)
    headings = {b.start for b in doc.blocks if b.kind == "heading"}
    overlapping = 0
    for before, after in itertools.pairwise(chunks):
        if after.start in headings:
            assert after.start >= before.end  # a new section starts fresh
            continue
        if after.start < before.end:
            overlapping += 1
            assert section_at(doc, after.start) == section_at(doc, before.end - 1)
            repeated = doc.text[after.start : before.end]
            assert 0 < tokenizer.count(repeated) <= CONFIG.overlap_tokens * 1.5 + 1
            assert after.start > before.start
    assert overlapping >= 5
    # In the long paragraph the overlap starts at a sentence start.
    long_para = max(doc.blocks, key=lambda b: b.end - b.start)
    inside = [c for c in chunks if long_para.start < c.start < long_para.end]
    assert inside and all(doc.text[c.start - 2 : c.start] == ". " for c in inside)


def test_metadata_sections_and_pages(tokenizer: HFTokenizer) -> None:
    doc = guide()
    chunks = chunk_document(doc, tokenizer, CONFIG)
    assert chunks[0].metadata["section"] == "Guide"
    assert {c.metadata["section"] for c in chunks} >= {
        "Guide > Long section",
        "Guide > Very long paragraph",
        "Guide > Giant line > Tail",
    }
    for chunk in chunks:
        assert chunk.metadata["source"] == "docs/guide.md"
        assert chunk.metadata["title"] == "Guide"
        assert chunk.metadata["page"] is None
    text = "Page one words. " * 300 + "\n\nPage two words."
    pdf_like = Document(
        "r.pdf",
        text,
        "h",
        {"source": "r.pdf", "title": "R"},
        (Block("paragraph", 0, 4799, page=1), Block("paragraph", 4801, len(text), page=2)),
    )
    pages = [c.metadata["page"] for c in chunk_document(pdf_like, tokenizer, CONFIG)]
    assert pages[0] == 1 and pages[-1] in (1, 2) and set(pages) <= {1, 2}


def test_deterministic_and_batch_equal(tokenizer: HFTokenizer) -> None:
    docs = [guide(seed) for seed in (1, 2, 3)]
    one = [c for d in docs for c in chunk_document(d, tokenizer, CONFIG)]
    assert one == [c for d in docs for c in chunk_document(d, tokenizer, CONFIG)]
    assert chunk_documents(docs, tokenizer, CONFIG) == one


def test_documents_without_blocks_and_empty(tokenizer: HFTokenizer) -> None:
    rng = random.Random(3)
    text = "\n  " + prose(rng, 40) + "\n\n"
    chunks = chunk_document(Document("plain", text, "h"), tokenizer, CONFIG)
    assert chunks[0].start == 3 and chunks[-1].end == len(text.rstrip())
    assert all(c.n_tokens <= CONFIG.max_tokens for c in chunks)
    assert chunk_document(Document("empty", " \n", "h"), tokenizer, CONFIG) == []


def test_small_tail_joins_the_previous_chunk(tokenizer: HFTokenizer) -> None:
    rng = random.Random(5)
    sentences = [prose(rng, 1) for _ in range(40)]
    text = " ".join(sentences)
    chunks = chunk_document(Document("d", text, "h"), tokenizer, CONFIG)
    assert chunks[-1].n_tokens >= CONFIG.min_tokens
    assert chunks[-1].end == len(text)


def test_config_defaults_and_validation() -> None:
    default = ChunkingConfig()
    assert (default.target_tokens, default.max_tokens, default.overlap_tokens) == (300, 450, 45)
    derived = ChunkingConfig(target_tokens=400)
    assert (derived.max_tokens, derived.overlap_tokens) == (600, 60)
    with pytest.raises(ValidationError, match="max_tokens"):
        ChunkingConfig(target_tokens=300, max_tokens=200)
    with pytest.raises(ValidationError, match="overlap_tokens"):
        ChunkingConfig(target_tokens=200, overlap_tokens=150)
    with pytest.raises(ValidationError, match="extra"):
        ChunkingConfig.model_validate({"target": 300})
    capped = default.capped(254)
    assert (capped.target_tokens, capped.max_tokens, capped.overlap_tokens) == (254, 254, 45)
    assert ChunkingConfig(target_tokens=200, max_tokens=250).capped(254).max_tokens == 250


PIECES = (
    "# Title\n",
    "## Part\n",
    "Setext\n===\n",
    "```\ncode \U0001f600 line\n",
    "```\n",
    "~~~\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n",
    "- item \u4e2d\u6587\n",
    "1. step\n",
    "\n",
    "Text caf\u00e9 na\u00efve. ",
    "Another sentence! ",
    "<p>html</p>",
    "---\n",
    "***\n\n",
    "> quote\n",
    "averyveryverylongidentifierwithoutanyspaces" * 3,
)


@pytest.mark.parametrize(
    "config",
    [
        ChunkingConfig(target_tokens=64, max_tokens=96, overlap_tokens=10, min_tokens=8),
        ChunkingConfig(target_tokens=16, max_tokens=20, overlap_tokens=4, min_tokens=0),
    ],
)
def test_invariants_on_random_documents(tokenizer: HFTokenizer, config: ChunkingConfig) -> None:
    """Random mixes of headings, fences, tables, rules and long words, read as Markdown,
    HTML and text: no chunk over max_tokens (counted in the document or alone), every block
    start in a chunk, chunks moving forward. (Found: headings carried onto a block they did
    not fit with; a Markdown rule's tokens not counted in the overlap budget.)"""
    rng = random.Random(11)
    for _ in range(150):
        text = "".join(rng.choice(PIECES) * rng.randint(1, 5) for _ in range(rng.randint(1, 40)))
        for name in ("x.md", "x.html", "x.txt"):
            doc = parse_bytes(text.encode(), doc_id=name, source=name)
            if not isinstance(doc, Document):
                continue
            chunks = chunk_document(doc, tokenizer, config)
            for chunk in chunks:
                assert chunk.text == doc.text[chunk.start : chunk.end]
                assert chunk.n_tokens <= config.max_tokens, (name, text)
                assert tokenizer.count(chunk.text) <= config.max_tokens, (name, text)
            for block in doc.blocks:
                assert any(c.start <= block.start < c.end for c in chunks), (name, text)
            for before, after in itertools.pairwise(chunks):
                assert before.start < after.start and before.end < after.end
