"""Plain text: the decoded file is the document's text; blank lines separate paragraphs."""

from __future__ import annotations

import re

from conveyor.rag.parsing import Parsed, decode_text
from conveyor.rag.types import Block

__all__ = ["paragraph_spans", "parse_text"]

_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")


def paragraph_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of each paragraph of ``text[start:end]`` (runs of non-blank lines),
    surrounding whitespace excluded."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    position = start
    for gap in _BLANK_LINES.finditer(text, start, end):
        spans.append((position, gap.start()))
        position = gap.end()
    spans.append((position, end))
    trimmed = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            trimmed.append((a, b))
    return trimmed


def parse_text(data: bytes) -> Parsed:
    text = decode_text(data)
    blocks = [Block("paragraph", a, b) for a, b in paragraph_spans(text)]
    return Parsed(text, blocks)
