"""Markdown: the source text itself is the document's text (so a citation shows exactly what
the author wrote), its YAML front matter the metadata, its structure the blocks.

A line-based reading of the CommonMark block structure, enough to keep what a chunker must
not cut: ATX (``## Title``) and setext (``Title`` over ``===``) headings make the section
path; fenced code blocks (```` ``` ```` or ``~~~``, to their closing fence), pipe tables
(a header row over a ``|---|`` delimiter row) and lists (to the first blank line not
followed by another item or an indented line) are one block each; the rest are paragraphs.
Inline markup is left as written.

Front matter (``---`` at the very top, to the next ``---`` or ``...``) gives ``title``,
``author`` (or ``authors``, joined), ``date`` and ``subject`` (the GDPR subject key); it is
not part of the text. Without a front-matter title, the first ``#`` heading is the title.
"""

from __future__ import annotations

import re
from typing import Any

from conveyor.rag.parsing import Parsed, UnparseableError, decode_text
from conveyor.rag.types import Block, BlockKind

__all__ = ["parse_markdown", "split_front_matter"]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_DELIMITER = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_FRONT_KEYS = ("title", "author", "date", "subject")


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """``(front matter, body)``; the front matter is ``{}`` when there is none."""
    if not text.startswith("---\n"):
        return {}, text
    close = re.search(r"^(?:---|\.\.\.)[ \t]*$", text[4:], re.MULTILINE)
    if close is None:
        return {}, text
    import yaml

    raw = text[4 : 4 + close.start()]
    body = text[4 + close.end() :]
    body = body[1:] if body.startswith("\n") else body
    try:
        loaded = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UnparseableError(f"front matter is not valid YAML{where}: {problem}") from None
    except ValueError as exc:  # a YAML date that is not a real one (2024-02-30)
        raise UnparseableError(
            f"front matter has a value YAML cannot build: {exc} (a date must be a real one; "
            "quote it to keep it as text)"
        ) from None
    if loaded is None:
        return {}, body
    if not isinstance(loaded, dict):
        raise UnparseableError(
            f"front matter must be a YAML mapping (title: ..., author: ...), "
            f"got {type(loaded).__name__}"
        )
    return loaded, body


def _front_metadata(front: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in _FRONT_KEYS:
        value = front.get(key)
        if key == "author" and value is None:
            value = front.get("authors")
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if value is not None and key != "date":
            value = str(value)
        found[key] = value
    return found


def parse_markdown(data: bytes) -> Parsed:
    front, text = split_front_matter(decode_text(data))
    metadata = _front_metadata(front)
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []
    first_h1: list[str] = []

    def section() -> tuple[str, ...]:
        return tuple(title for _, title in stack)

    def add(kind: BlockKind, first: int, last: int) -> None:
        """A block over lines ``first..last`` inclusive, surrounding whitespace excluded."""
        a, b = starts[first], starts[last + 1]
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            blocks.append(Block(kind, a, b, section()))

    def heading(level: int, title: str, first: int, last: int) -> None:
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        if level == 1 and not first_h1:
            first_h1.append(title)
        add("heading", first, last)

    paragraph: int | None = None
    i, n = 0, len(lines)
    while i < n:
        line = lines[i].rstrip("\n")
        if not line.strip():
            if paragraph is not None:
                add("paragraph", paragraph, i - 1)
                paragraph = None
            i += 1
            continue
        fence = _FENCE.match(line)
        atx = _ATX.match(line)
        setext = _SETEXT.match(line) if paragraph is not None else None
        if setext is not None and paragraph is not None:
            title = " ".join(lines[k].strip() for k in range(paragraph, i))
            heading(1 if setext.group(1)[0] == "=" else 2, title, paragraph, i)
            paragraph = None
            i += 1
            continue
        table = "|" in line and i + 1 < n and _DELIMITER.match(lines[i + 1]) is not None
        rule = _RULE.match(line)
        item = _ITEM.match(line) if rule is None else None
        if fence is None and atx is None and not table and rule is None and item is None:
            if paragraph is None:
                paragraph = i
            i += 1
            continue
        if paragraph is not None:
            add("paragraph", paragraph, i - 1)
            paragraph = None
        if fence is not None:
            marker = fence.group(1)
            j = i + 1
            while j < n:
                closing = _FENCE.match(lines[j])
                if (
                    closing is not None
                    and closing.group(1)[0] == marker[0]
                    and len(closing.group(1)) >= len(marker)
                    and not lines[j].strip().strip(marker[0])
                ):
                    break
                j += 1
            add("code", i, min(j, n - 1))
            i = j + 1
        elif atx is not None:
            heading(len(atx.group(1)), (atx.group(2) or "").strip(), i, i)
            i += 1
        elif table:
            j = i + 2
            while j < n and lines[j].strip() and "|" in lines[j]:
                j += 1
            add("table", i, j - 1)
            i = j
        elif rule is not None:
            i += 1
        else:
            j = _list_end(lines, i)
            add("list", i, j - 1)
            i = j
    if paragraph is not None:
        add("paragraph", paragraph, n - 1)
    if not metadata.get("title") and first_h1:
        metadata["title"] = first_h1[0]
    return Parsed(text, blocks, metadata)


def _list_end(lines: list[str], first: int) -> int:
    """The line after the list starting at ``first``: it runs over non-blank lines (a
    heading or a fence at the margin ends it) and over blank lines followed by another item
    or an indented continuation."""
    j, n = first + 1, len(lines)
    while j < n:
        line = lines[j]
        if line.strip():
            if _ATX.match(line) or (_FENCE.match(line) and not line.startswith((" ", "\t"))):
                break
            j += 1
            continue
        k = j
        while k < n and not lines[k].strip():
            k += 1
        if k < n and (_ITEM.match(lines[k]) or lines[k].startswith(("  ", "\t"))):
            j = k
            continue
        break
    return j
