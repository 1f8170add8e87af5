"""Accumulates a parsed document's text block by block, recording each block's offsets.

Parsers that *render* a source (HTML, PDF) build the document's text here: blocks are
joined by a blank line, so a chunk cut between two blocks never glues their words together,
and every :class:`~conveyor.rag.types.Block` points exactly at its own characters.
"""

from __future__ import annotations

from conveyor.rag.types import Block, BlockKind

__all__ = ["TextBuilder"]

_SEPARATOR = "\n\n"


class TextBuilder:
    """Appends blocks of text; :attr:`text` and :attr:`blocks` are the result."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self.blocks: list[Block] = []

    def add(
        self,
        kind: BlockKind,
        text: str,
        section: tuple[str, ...] = (),
        page: int | None = None,
    ) -> None:
        """Append ``text`` as one block: stripped (a code block keeps its first line's
        indentation); nothing if it is blank."""
        text = text.strip("\n").rstrip() if kind == "code" else text.strip()
        if not text:
            return
        if self._parts:
            self._parts.append(_SEPARATOR)
            self._length += len(_SEPARATOR)
        start = self._length
        self._parts.append(text)
        self._length += len(text)
        self.blocks.append(Block(kind, start, self._length, section, page))

    @property
    def text(self) -> str:
        return "".join(self._parts)
