"""PDF through pypdf: each page's extracted text, paragraph by paragraph, each block knowing
its 1-based page.

Pages are joined by a blank line; a page's text is split into paragraphs at blank lines
(pypdf's layout-free extraction gives one line per text line, so a page without blank lines
is one paragraph, which the chunker splits at sentences). Title, author and date come from
the document information dictionary (``/Title``, ``/Author``, ``/CreationDate``) and
``/Subject`` is *not* taken as the GDPR subject key (in PDFs it is a topic). A file pypdf
cannot read, an encrypted one without an empty password, or one with no extractable text
(a scan) is a parse failure naming the cause.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from conveyor.rag.parsing import Parsed, UnparseableError
from conveyor.rag.parsing._builder import TextBuilder
from conveyor.rag.parsing.text import paragraph_spans

__all__ = ["parse_pdf"]


def parse_pdf(data: bytes) -> Parsed:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not data.lstrip()[:5].startswith(b"%PDF-"):
        raise UnparseableError("not a PDF file (no %PDF- header)")
    # pypdf logs every recoverable oddity of a damaged file as a warning; the outcome is
    # reported once, as the failure's reason or a readable document.
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        try:
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise UnparseableError("encrypted, and the empty password does not open it")
            out = TextBuilder()
            for number, page in enumerate(reader.pages, start=1):
                text = (page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n")
                text = text.replace("\x00", "")
                for a, b in paragraph_spans(text):
                    out.add("paragraph", text[a:b], page=number)
            metadata = _metadata(reader)
        except PdfReadError as exc:
            raise UnparseableError(f"unreadable PDF: {exc}") from None
    finally:
        logger.setLevel(level)
    if not out.blocks:
        raise UnparseableError(
            f"no extractable text in {len(reader.pages)} page(s) (a scanned PDF needs OCR)"
        )
    return Parsed(out.text, out.blocks, metadata)


def _metadata(reader: Any) -> dict[str, Any]:
    info = reader.metadata
    if info is None:
        return {}
    found: dict[str, Any] = {"title": info.title, "author": info.author}
    try:
        found["date"] = info.creation_date
    except (ValueError, TypeError):  # a malformed /CreationDate: keep the raw text
        found["date"] = info.get("/CreationDate")
    return {k: (str(v).strip() if isinstance(v, str) else v) for k, v in found.items()}
