"""HTML: the visible text, rendered block by block (standard library ``html.parser``).

Headings (``h1``-``h6``) make the section path; ``<pre>`` is a code block with its
whitespace kept; a ``<table>`` is one block, a row per line and cells joined by `` | ``;
a ``<ul>``/``<ol>`` is one list block, an item per line; every other run of text between
block-level tags is a paragraph, its whitespace collapsed. ``<script>``, ``<style>``,
``<noscript>``, ``<template>``, ``<svg>`` and the ``<head>`` (but its ``<title>``) are
dropped. The title is ``<title>``, else the first ``<h1>``; author and date come from
``<meta name=author>`` and ``<meta name=date>`` (or ``article:published_time``,
``dc.date``, ``dcterms.created``); ``<meta name=subject>`` is the GDPR subject key.
The bytes are UTF-8 unless a ``<meta charset>`` says otherwise.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from conveyor.rag.parsing import Parsed, UnparseableError, decode_text
from conveyor.rag.parsing._builder import TextBuilder

__all__ = ["parse_html"]

_DROPPED = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Tags that end a paragraph: the text on either side is not one paragraph.
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "body", "dd", "details", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "html", "li",
    "main", "nav", "p", "section", "summary", "caption",
}  # fmt: skip
_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source"}
_META_KEYS = {
    "author": "author",
    "dc.creator": "author",
    "article:author": "author",
    "date": "date",
    "dc.date": "date",
    "dcterms.created": "date",
    "article:published_time": "date",
    "subject": "subject",
    "description": "description",
}
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def _collapse(text: str) -> str:
    return " ".join(text.split())


class _Renderer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = TextBuilder()
        self.meta: dict[str, str] = {}
        self.title: str | None = None
        self.first_h1: str | None = None
        self._stack: list[tuple[int, str]] = []
        self._dropped = 0  # depth inside dropped elements
        self._in_title = False
        self._title_parts: list[str] = []
        self._buffer: list[str] = []
        self._heading: int | None = None
        self._pre = 0
        self._table = 0
        self._rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._lists = 0
        self._items: list[str] = []

    # -- helpers --------------------------------------------------------------

    def _section(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._stack)

    def _flush(self) -> None:
        text = _collapse("".join(self._buffer))
        self._buffer = []
        if text:
            self.out.add("paragraph", text, self._section())

    def _end_item(self) -> None:
        text = _collapse("".join(self._buffer))
        self._buffer = []
        if text:
            self._items.append("  " * (self._lists - 1) + "- " + text)

    # -- parser callbacks -----------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            found = dict(attrs)
            name = (found.get("name") or found.get("property") or "").lower()
            key = _META_KEYS.get(name)
            if key and found.get("content") and key not in self.meta:
                self.meta[key] = found["content"] or ""
            return
        if tag == "title" and self.title is None and not self._title_parts:
            self._in_title = True
            return
        if tag in _DROPPED:
            self._dropped += 1
            return
        if self._dropped or tag in _VOID - {"hr"}:
            if tag == "br" and not self._dropped:
                (self._cell if self._table and self._cell is not None else self._buffer).append(
                    "\n" if self._pre else " "
                )
            return
        if self._table:
            if tag == "table":
                self._table += 1
            elif tag == "tr":
                self._rows.append([])
            elif tag in ("td", "th"):
                self._end_cell()
                self._cell = []
            return
        if self._pre:
            if tag == "pre":
                self._pre += 1
            return
        if tag in ("ul", "ol"):
            if self._lists == 0:
                self._flush()
            else:
                self._end_item()
            self._lists += 1
            return
        if self._lists:
            if tag == "li":
                self._end_item()
            return
        if tag == "table":
            self._flush()
            self._table = 1
            self._rows = []
            self._cell = None
        elif tag == "pre":
            self._flush()
            self._pre = 1
        elif tag in _HEADINGS:
            self._flush()
            self._heading = _HEADINGS[tag]
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def _end_cell(self) -> None:
        if self._cell is not None:
            if not self._rows:
                self._rows.append([])
            self._rows[-1].append(_collapse("".join(self._cell)))
            self._cell = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = _collapse("".join(self._title_parts)) or None
            return
        if tag in _DROPPED:
            self._dropped = max(0, self._dropped - 1)
            return
        if self._dropped:
            return
        if self._table:
            if tag in ("td", "th"):
                self._end_cell()
            elif tag == "table":
                self._table -= 1
                if self._table == 0:
                    self._end_cell()
                    lines = [" | ".join(row) for row in self._rows if any(row)]
                    self.out.add("table", "\n".join(lines), self._section())
                    self._rows = []
            return
        if self._pre:
            if tag == "pre":
                self._pre -= 1
                if self._pre == 0:
                    code = "".join(self._buffer).strip("\n").rstrip()
                    self._buffer = []
                    self.out.add("code", code, self._section())
            return
        if self._lists:
            if tag == "li":
                self._end_item()
            elif tag in ("ul", "ol"):
                self._end_item()
                self._lists -= 1
                if self._lists == 0:
                    self.out.add("list", "\n".join(self._items), self._section())
                    self._items = []
            return
        if tag in _HEADINGS and self._heading is not None:
            title = _collapse("".join(self._buffer))
            self._buffer = []
            level = self._heading
            self._heading = None
            if not title:
                return
            while self._stack and self._stack[-1][0] >= level:
                self._stack.pop()
            self._stack.append((level, title))
            if level == 1 and self.first_h1 is None:
                self.first_h1 = title
            self.out.add("heading", title, self._section())
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)
        elif self._dropped:
            return
        elif self._table:
            if self._cell is not None:
                self._cell.append(data)
        else:
            self._buffer.append(data)

    def close(self) -> None:
        super().close()
        if self._table:
            self._end_cell()
            lines = [" | ".join(row) for row in self._rows if any(row)]
            self.out.add("table", "\n".join(lines), self._section())
        elif self._pre:
            self.out.add("code", "".join(self._buffer).strip("\n").rstrip(), self._section())
            self._buffer = []
        elif self._lists:
            self._end_item()
            self.out.add("list", "\n".join(self._items), self._section())
        self._flush()


def parse_html(data: bytes) -> Parsed:
    declared = _CHARSET.search(data[:4096])
    text = decode_text(data, declared.group(1).decode("ascii") if declared else None)
    renderer = _Renderer()
    try:
        renderer.feed(text)
        renderer.close()
    except AssertionError as exc:  # html.parser's own complaint about broken markup
        raise UnparseableError(f"malformed markup: {exc}") from None
    metadata: dict[str, object] = dict(renderer.meta)
    metadata["title"] = renderer.title or renderer.first_h1
    return Parsed(renderer.out.text, renderer.out.blocks, metadata)
