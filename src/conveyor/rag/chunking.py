"""Documents into chunks: token-based with the embedding model's own tokenizer, shaped by the
document's structure, with overlap inside a section.

::

    from conveyor.rag.chunking import ChunkingConfig, chunk_document

    chunks = chunk_document(document, tokenizer, ChunkingConfig(target_tokens=300))

How a document is cut:

1. The whole text is tokenized once; every count below is a difference of token indices.
2. Each :class:`~conveyor.rag.types.Block` is a unit the chunker does not cut (a heading,
   a paragraph, a code block, a table, a list). A block longer than ``max_tokens`` is split
   at sentence ends (prose) or line ends (code, tables, lists), then at line ends, and a
   piece still too long at word starts between tokens.
3. Units are packed greedily up to ``target_tokens``. A unit that would pass the target
   still joins when the chunk is under ``min_tokens`` or ends with a heading (a heading is
   not cut from its section's first paragraph), as long as the chunk stays within
   ``max_tokens``. A heading starts a new chunk once the current one has ``min_tokens``,
   so chunks follow sections.
4. A chunk that starts because the previous one was full, inside the same section, begins
   with about ``overlap_tokens`` of the previous chunk's end: from a sentence start when one
   is near, else a word start; a code block, table or list is repeated whole or not at all.
5. A last chunk under ``min_tokens`` joins the previous one when both are one section and
   the result fits ``max_tokens``.

A chunk's text is exactly ``document.text[start:end]`` (the citation); its metadata is the
document's plus ``section`` (headings joined by `` > ``) and ``page`` (a PDF's 1-based page
of the chunk's start). The result depends only on the inputs (no randomness, no clock).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.rag.types import Block, BlockKind, Chunk, Document, Tokenizer

__all__ = ["ChunkingConfig", "chunk_document", "chunk_documents"]

_ATOMIC: frozenset[BlockKind] = frozenset({"code", "table", "list"})
# A sentence ends at . ! ? (or an ellipsis), closing quotes/brackets included, before space.
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*(?=\s)")
_SNAP = 16  # tokens a cut may move back to land on a word start


class ChunkingConfig(BaseModel):
    """Chunk sizes, in tokens of the embedding model's tokenizer (special tokens excluded).

    ``max_tokens`` defaults to 1.5 x target, ``overlap_tokens`` to 15 % of it. For an
    encoder that reads at most N tokens (all-MiniLM-L6-v2: 256 with its two special
    tokens), keep ``max_tokens`` at N - 2 or less: see :meth:`capped`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_tokens: int = Field(
        300, ge=16, le=8192, description="Size a chunk is filled to (200-500 suits retrieval)."
    )
    max_tokens: int = Field(
        450, ge=16, le=8192, description="Hard limit; default 1.5 x target_tokens."
    )
    overlap_tokens: int = Field(
        45, ge=0, description="Tokens repeated from the previous chunk of the same section."
    )
    min_tokens: int = Field(
        50, ge=0, description="A smaller chunk is merged with its neighbour when it fits."
    )

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            try:
                target = int(data.get("target_tokens", 300))
            except (TypeError, ValueError):
                return data  # the field's own validation reports it
            if data.get("max_tokens") is None:
                data["max_tokens"] = max(target, round(target * 1.5))
            if data.get("overlap_tokens") is None:
                data["overlap_tokens"] = round(target * 0.15)
            if data.get("min_tokens") is None:
                data["min_tokens"] = min(50, target // 4)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ChunkingConfig:
        if self.max_tokens < self.target_tokens:
            raise ValueError(
                f"max_tokens ({self.max_tokens}) must be at least target_tokens "
                f"({self.target_tokens})"
            )
        if self.overlap_tokens * 2 > self.target_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be at most half of "
                f"target_tokens ({self.target_tokens})"
            )
        if self.min_tokens > self.target_tokens:
            raise ValueError(
                f"min_tokens ({self.min_tokens}) must be at most target_tokens "
                f"({self.target_tokens})"
            )
        return self

    def capped(self, limit: int) -> ChunkingConfig:
        """This config with no chunk over ``limit`` tokens (an encoder's input limit less
        its special tokens): max, target, overlap and min scaled down where needed."""
        if self.max_tokens <= limit:
            return self
        target = min(self.target_tokens, limit)
        return ChunkingConfig(
            target_tokens=target,
            max_tokens=limit,
            overlap_tokens=min(self.overlap_tokens, target // 2),
            min_tokens=min(self.min_tokens, target),
        )


@dataclass(frozen=True, slots=True)
class _Unit:
    """A span the packer does not cut: a block, or a piece of a block too long for a chunk."""

    start: int
    end: int
    t0: int
    t1: int
    kind: BlockKind
    section: tuple[str, ...]
    page: int | None
    whole: bool  # the entire block (not a piece of a split one)

    @property
    def tokens(self) -> int:
        return self.t1 - self.t0


class _Document:
    """One document's text and token positions, tokenized once."""

    def __init__(self, text: str, spans: list[tuple[int, int]]) -> None:
        self.text = text
        self.starts = [a for a, _ in spans]
        self.ends = [b for _, b in spans]

    def token_at(self, char: int) -> int:
        """Index of the first token starting at or after ``char``."""
        return bisect_left(self.starts, char)

    def count(self, a: int, b: int) -> int:
        return self.token_at(b) - self.token_at(a)

    def word_start(self, i: int) -> bool:
        """Whether token ``i`` begins a word (whitespace before it, or the text's start)."""
        return i == 0 or self.starts[i] > self.ends[i - 1]


def chunk_document(
    document: Document, tokenizer: Tokenizer, config: ChunkingConfig | None = None
) -> list[Chunk]:
    """The chunks of ``document``, in order (see the module's documentation)."""
    return _chunk(document, tokenizer.spans(document.text), config or ChunkingConfig())


def chunk_documents(
    documents: Sequence[Document], tokenizer: Tokenizer, config: ChunkingConfig | None = None
) -> list[Chunk]:
    """The chunks of several documents, in order. Each document is tokenized on its own:
    one batched ``encode_batch`` over every document measured slower on a loaded 2-core
    machine (benchmarks/rag_chunking.py), and it would hold every encoding at once."""
    config = config or ChunkingConfig()
    return [c for d in documents for c in _chunk(d, tokenizer.spans(d.text), config)]


def _chunk(document: Document, spans: list[tuple[int, int]], config: ChunkingConfig) -> list[Chunk]:
    if not document.text.strip():
        return []
    doc = _Document(document.text, spans)
    units = _units(doc, _blocks(document), config)
    if not units:
        return []
    ranges = _pack(doc, units, config)
    chunks = []
    for ordinal, (start, end, held) in enumerate(ranges):
        metadata = dict(document.metadata)
        metadata["section"] = " > ".join(_main_section(held))
        metadata["page"] = held[0].page
        chunks.append(
            Chunk(
                doc_id=document.id,
                ordinal=ordinal,
                text=document.text[start:end],
                start=start,
                end=end,
                n_tokens=doc.count(start, end),
                metadata=metadata,
            )
        )
    return chunks


def _main_section(units: list[_Unit]) -> tuple[str, ...]:
    """The section holding most of a chunk's tokens (the first of equals): a chunk that
    gathers a short section and the start of the next is filed under the one it is
    mostly about."""
    tokens: dict[tuple[str, ...], int] = {}
    for unit in units:
        tokens[unit.section] = tokens.get(unit.section, 0) + max(unit.tokens, 1)
    return max(tokens, key=lambda section: tokens[section])


def _blocks(document: Document) -> list[Block]:
    if document.blocks:
        return sorted(document.blocks, key=lambda b: (b.start, b.end))
    text = document.text
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    return [Block("text", start, end)]


# -- units ----------------------------------------------------------------------------


def _units(doc: _Document, blocks: list[Block], config: ChunkingConfig) -> list[_Unit]:
    units: list[_Unit] = []
    for block in blocks:
        if block.end <= block.start:
            continue
        t0, t1 = doc.token_at(block.start), doc.token_at(block.end)
        if t1 - t0 <= config.max_tokens:
            units.append(
                _Unit(block.start, block.end, t0, t1, block.kind, block.section, block.page, True)
            )
            continue
        prose = block.kind not in _ATOMIC
        for a, b in _split(doc, block.start, block.end, 0 if prose else 1, config):
            units.append(
                _Unit(
                    a, b, doc.token_at(a), doc.token_at(b), block.kind, block.section,
                    block.page, False,
                )
            )  # fmt: skip
    return units


def _split(
    doc: _Document, a: int, b: int, level: int, config: ChunkingConfig
) -> list[tuple[int, int]]:
    """``[a, b)`` in pieces of at most ``max_tokens``: at sentence ends (level 0), line
    ends (1), then word starts between tokens (2)."""
    if doc.count(a, b) <= config.max_tokens:
        return [(a, b)]
    if level >= 2:
        return _token_windows(doc, a, b, config)
    segments = _sentences(doc.text, a, b) if level == 0 else _lines(doc.text, a, b)
    if len(segments) <= 1:
        return _split(doc, a, b, level + 1, config)
    pieces: list[tuple[int, int]] = []
    for s, e in segments:
        pieces.extend(_split(doc, s, e, level + 1, config))
    return pieces


def _trimmed(text: str, cuts: list[int], a: int, b: int) -> list[tuple[int, int]]:
    spans = []
    edges = [a, *cuts, b]
    for s, e in pairwise(edges):
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            spans.append((s, e))
    return spans


def _sentences(text: str, a: int, b: int) -> list[tuple[int, int]]:
    return _trimmed(text, [m.end() for m in _SENTENCE_END.finditer(text, a, b)], a, b)


def _lines(text: str, a: int, b: int) -> list[tuple[int, int]]:
    cuts = []
    position = text.find("\n", a, b)
    while position != -1:
        cuts.append(position + 1)
        position = text.find("\n", position + 1, b)
    return _trimmed(text, cuts, a, b)


def _token_windows(doc: _Document, a: int, b: int, config: ChunkingConfig) -> list[tuple[int, int]]:
    """Windows of ``target_tokens`` tokens, each cut moved back to a word start when one is
    within a few tokens (a long identifier or URL is cut between its tokens)."""
    i, last = doc.token_at(a), doc.token_at(b)
    pieces = []
    while i < last:
        j = min(i + config.target_tokens, last)
        if j < last:
            for k in range(j, max(i + 1, j - _SNAP), -1):
                if doc.word_start(k):
                    j = k
                    break
        pieces.append((doc.starts[i], doc.ends[j - 1]))
        i = j
    return pieces


# -- packing --------------------------------------------------------------------------


def _pack(
    doc: _Document, units: list[_Unit], config: ChunkingConfig
) -> list[tuple[int, int, list[_Unit]]]:
    """``(start, end, units)`` of each chunk."""
    chunks: list[tuple[int, int, int, int, list[_Unit]]] = []  # start, t_start, end, t_end
    start = t_start = 0
    current: list[_Unit] = []

    def close() -> None:
        chunks.append((start, t_start, current[-1].end, current[-1].t1, list(current)))

    for unit in units:
        if not current:
            start, t_start, current = unit.start, unit.t0, [unit]
            continue
        now = current[-1].t1 - t_start
        after = unit.t1 - t_start
        if unit.kind == "heading" and now >= config.min_tokens:
            close()
            start, t_start, current = unit.start, unit.t0, [unit]
        elif after <= config.target_tokens or (
            after <= config.max_tokens
            and (now < config.min_tokens or current[-1].kind == "heading")
        ):
            current.append(unit)
        else:
            # Trailing headings go with the unit they introduce, when that fits.
            carried: list[_Unit] = []
            while (
                len(current) > 1
                and current[-1].kind == "heading"
                and unit.t1 - current[-1].t0 <= config.max_tokens
            ):
                carried.insert(0, current.pop())
            close()
            if carried:
                start, t_start, current = carried[0].start, carried[0].t0, [*carried, unit]
                continue
            previous = chunks[-1]
            begin = None
            if unit.kind != "heading" and unit.section == previous[4][-1].section:
                # What the unit adds counts from the previous chunk's end: text between
                # blocks (a Markdown rule) has tokens too.
                budget = min(config.overlap_tokens, config.max_tokens - (unit.t1 - previous[3]))
                begin = _overlap(doc, previous[4], previous[1], budget, config)
            if begin is None:
                start, t_start = unit.start, unit.t0
            else:
                start, t_start = doc.starts[begin], begin
            current = [unit]
    close()
    if len(chunks) > 1:
        last, before = chunks[-1], chunks[-2]
        if (
            last[3] - last[1] < config.min_tokens
            and last[4][0].section == before[4][-1].section
            and last[3] - before[1] <= config.max_tokens
        ):
            chunks[-2:] = [(before[0], before[1], last[2], last[3], before[4] + last[4])]
    return [(s, e, units_) for s, _, e, _, units_ in chunks]


def _overlap(
    doc: _Document, units: list[_Unit], t_first: int, budget: int, config: ChunkingConfig
) -> int | None:
    """The token the next chunk starts at to repeat about ``budget`` tokens of the chunk
    made of ``units`` (whose first token is ``t_first``); None for no overlap."""
    if budget <= 0:
        return None
    tail = units[-1]
    t_end = tail.t1
    if (tail.kind in _ATOMIC and tail.whole) or tail.kind == "heading":
        # A code block, table or list is repeated whole, or not at all.
        if tail.tokens <= budget and tail.t0 > t_first:
            return tail.t0
        return None
    # The overlap stays within the prose at the chunk's end (after its last heading or
    # whole code block, table or list) and never repeats the whole chunk.
    floor = t_first + 1
    for unit in reversed(units):
        if unit.kind == "heading" or (unit.kind in _ATOMIC and unit.whole):
            floor = max(floor, unit.t1)
            break
    want = max(1, min(budget, config.overlap_tokens))
    lowest = max(floor, t_end - min(budget, round(want * 1.5)))
    if lowest >= t_end:
        return None
    # A sentence start (or a paragraph's start) as close to ``want`` tokens from the end
    # as possible, at least half of it.
    a = doc.starts[lowest]
    candidates = [
        doc.token_at(m.end()) for m in _SENTENCE_END.finditer(doc.text, a, doc.ends[t_end - 1])
    ]
    candidates += [unit.t0 for unit in units]
    fitting = [k for k in candidates if lowest <= k < t_end and t_end - k >= want // 2]
    best = min(fitting, key=lambda k: (abs(t_end - k - want), k), default=None)
    if best is not None:
        return best
    k = max(lowest, t_end - want)
    for j in range(k, max(lowest - 1, k - _SNAP), -1):
        if doc.word_start(j):
            return j
    for j in range(k, t_end):
        if doc.word_start(j):
            return j
    return None  # no overlap rather than one starting inside a word
