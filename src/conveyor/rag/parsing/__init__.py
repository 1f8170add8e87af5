"""Source bytes to a :class:`~conveyor.rag.types.Document`, by file type.

::

    from conveyor.rag.parsing import parse_bytes

    doc = parse_bytes(data, doc_id="guide/intro.md", source="docs/guide/intro.md")

One parser per format, each in its own module and imported only when a file of its type
comes: ``.txt`` (:mod:`.text`), ``.md``/``.markdown`` (:mod:`.markdown`), ``.html``/``.htm``
(:mod:`.html`), ``.pdf`` (:mod:`.pdf`, pypdf). A parser returns a :class:`Parsed` or raises
:class:`UnparseableError`; :func:`parse_bytes` turns that, or any other exception a parser
lets through (pypdf on a damaged file), into a :class:`~conveyor.rag.types.ParseFailure`
with the reason, so one bad file never stops a build.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import import_module
from pathlib import PurePosixPath
from typing import Any

from conveyor.rag.types import Block, Document, ParseFailure

__all__ = [
    "FORMATS",
    "Parsed",
    "UnparseableError",
    "decode_text",
    "format_of",
    "normalize_date",
    "parse_bytes",
]

#: File suffix (lower case) -> format name.
FORMATS: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}

# Format -> "module:function" parsing (data: bytes) -> Parsed; imported on first use.
_PARSERS: dict[str, str] = {
    "text": "conveyor.rag.parsing.text:parse_text",
    "markdown": "conveyor.rag.parsing.markdown:parse_markdown",
    "html": "conveyor.rag.parsing.html:parse_html",
    "pdf": "conveyor.rag.parsing.pdf:parse_pdf",
}

#: Metadata keys every document carries (None when the source does not say).
BASE_KEYS = ("source", "title", "date", "author")


class UnparseableError(ValueError):
    """Raised by a parser: the bytes are not a readable document of its format. Never
    escapes :func:`parse_bytes`, which records it as a ParseFailure."""


@dataclass(slots=True)
class Parsed:
    """What a format parser returns: the text, its blocks and what the file says of itself
    (title, author, date, subject)."""

    text: str
    blocks: list[Block]
    metadata: dict[str, Any] = field(default_factory=dict)


def format_of(name: str) -> str | None:
    """The format of a file named ``name`` by its suffix, or None for an unknown type."""
    return FORMATS.get(PurePosixPath(name).suffix.lower())


def parse_bytes(
    data: bytes,
    *,
    doc_id: str,
    source: str,
    fmt: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Document | ParseFailure:
    """Parse ``data`` as ``fmt`` (default: by ``doc_id``'s suffix).

    ``source`` is recorded in the metadata and in a failure; ``extra`` metadata (a source's
    own fields) is added under what the file says. The content hash is the sha256 of
    ``data``. The title falls back to the file's name without suffix.
    """
    fmt = fmt or format_of(doc_id)
    if fmt is None:
        suffix = PurePosixPath(doc_id).suffix or "(none)"
        known = ", ".join(sorted(FORMATS))
        return ParseFailure(source, f"unknown file type {suffix}: the parsers read {known}")
    target = _PARSERS.get(fmt)
    if target is None:
        return ParseFailure(source, f"unknown format {fmt!r}: known are {', '.join(_PARSERS)}")
    module, _, function = target.partition(":")
    parser: Callable[[bytes], Parsed] = getattr(import_module(module), function)
    try:
        parsed = parser(data)
    except UnparseableError as exc:
        return ParseFailure(source, f"{fmt}: {exc}")
    except RecursionError:
        return ParseFailure(source, f"{fmt}: structure nested too deeply to parse")
    except Exception as exc:  # a third-party parser's own error on a damaged file
        return ParseFailure(source, f"{fmt}: {type(exc).__name__}: {exc}")
    if not parsed.text.strip():
        return ParseFailure(source, f"{fmt}: no text to index (empty, or only images)")
    metadata: dict[str, Any] = dict.fromkeys(BASE_KEYS)
    metadata.update(extra or {})
    metadata.update({k: v for k, v in parsed.metadata.items() if v not in (None, "")})
    metadata["source"] = source
    metadata["format"] = fmt
    metadata["date"] = normalize_date(metadata.get("date"))
    if not metadata.get("title"):
        metadata["title"] = PurePosixPath(doc_id).stem or doc_id
    return Document(
        id=doc_id,
        text=parsed.text,
        content_hash=hashlib.sha256(data).hexdigest(),
        metadata=metadata,
        blocks=tuple(parsed.blocks),
    )


def decode_text(data: bytes, declared: str | None = None) -> str:
    """``data`` as text: UTF-8 (a BOM is dropped), else the ``declared`` encoding;
    UnparseableError naming the first bad byte otherwise. Newlines become ``\\n``."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnparseableError("binary content (NUL bytes), not text")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encodings = ["utf-16"]
    else:
        encodings = ["utf-8-sig"]
        if declared and declared.lower().replace("_", "-") not in ("utf-8", "utf8"):
            encodings.append(declared)
    error: UnicodeDecodeError | None = None
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            error = error or exc
        except LookupError:
            continue
        else:
            return text.replace("\r\n", "\n").replace("\r", "\n")
    assert error is not None
    raise UnparseableError(
        f"not valid {error.encoding.upper()} text: byte 0x{data[error.start]:02x} at "
        f"offset {error.start}" + (f" (and not {declared} either)" if len(encodings) > 1 else "")
    )


def normalize_date(value: Any) -> str | None:
    """A date as ISO 8601 text (``2024-03-01`` or a full timestamp); text is kept as given."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip() or None
