"""Parsers: every format on small realistic inputs, offsets exact, structure and metadata kept,
and every kind of unreadable file recorded as a ParseFailure with its reason."""

from __future__ import annotations

import hashlib

import pytest

from conveyor.rag.parsing import parse_bytes
from conveyor.rag.types import Document, ParseFailure


def make_pdf(pages: list[list[str]], info: dict[str, str] | None = None) -> bytes:
    """A minimal valid PDF written by hand: a Helvetica text content stream per page (one
    ``Tj`` per line), an xref table with exact offsets, and an /Info dictionary."""
    objs: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    page_ids = [4 + 2 * i for i in range(len(pages))]
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    objs[2] = f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode()
    for pid, lines in zip(page_ids, pages, strict=True):
        ops = ["BT", "/F1 11 Tf", "14 TL", "72 740 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objs[pid] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {pid + 1} 0 R >>"
        ).encode()
        objs[pid + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    info_id = None
    if info:
        info_id = max(objs) + 1
        objs[info_id] = ("<< " + " ".join(f"/{k} ({v})" for k, v in info.items()) + " >>").encode()
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for i in sorted(objs):
        offsets[i] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (i, objs[i])
    xref = len(out)
    size = max(objs) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for i in range(1, size):
        out += b"%010d 00000 n \n" % offsets[i]
    trailer = f"<< /Size {size} /Root 1 0 R" + (f" /Info {info_id} 0 R" if info_id else "") + " >>"
    out += b"trailer\n%s\nstartxref\n%d\n%%%%EOF\n" % (trailer.encode(), xref)
    return bytes(out)


def parse(data: bytes, name: str) -> Document:
    doc = parse_bytes(data, doc_id=name, source=f"docs/{name}")
    assert isinstance(doc, Document), doc
    assert doc.content_hash == hashlib.sha256(data).hexdigest()
    for block in doc.blocks:  # every block points at its own, stripped, non-empty text
        piece = doc.text[block.start : block.end]
        assert piece.strip()
        assert piece == (piece.rstrip() if block.kind == "code" else piece.strip())
    starts = [b.start for b in doc.blocks]
    assert starts == sorted(starts)
    return doc


def texts(doc: Document) -> list[tuple[str, str]]:
    return [(b.kind, doc.text[b.start : b.end]) for b in doc.blocks]


MARKDOWN = """\
---
title: Deploying the scorer
authors: [Ann Lee, Bo Chen]
date: 2024-03-01
subject: customer-4711
---
# Deploying

Conveyor serves a model behind one HTTP route.
The route is versioned.

## Install

```bash
pip install conveyor

# the blank line above stays inside the block
conveyor init
```

| flag | meaning |
|------|---------|
| `-n` | dry run |

- first step
- second step

  with a continuation paragraph
- third step

Rollback
--------

Move the alias back. *Nothing* is rebuilt.
"""


def test_markdown_front_matter_sections_and_blocks() -> None:
    doc = parse(MARKDOWN.encode(), "guide/deploy.md")
    assert doc.id == "guide/deploy.md"
    assert doc.metadata["title"] == "Deploying the scorer"
    assert doc.metadata["author"] == "Ann Lee, Bo Chen"
    assert doc.metadata["date"] == "2024-03-01"
    assert doc.metadata["subject"] == "customer-4711"
    assert doc.metadata["source"] == "docs/guide/deploy.md"
    assert not doc.text.startswith("---")  # the front matter is not indexed text
    assert texts(doc) == [
        ("heading", "# Deploying"),
        ("paragraph", "Conveyor serves a model behind one HTTP route.\nThe route is versioned."),
        ("heading", "## Install"),
        (
            "code",
            "```bash\npip install conveyor\n\n# the blank line above stays inside the block\n"
            "conveyor init\n```",
        ),
        ("table", "| flag | meaning |\n|------|---------|\n| `-n` | dry run |"),
        ("list", "- first step\n- second step\n\n  with a continuation paragraph\n- third step"),
        ("heading", "Rollback\n--------"),
        ("paragraph", "Move the alias back. *Nothing* is rebuilt."),
    ]
    sections = [b.section for b in doc.blocks]
    assert sections[1] == ("Deploying",)
    assert sections[3] == sections[4] == ("Deploying", "Install")
    assert sections[-1] == ("Deploying", "Rollback")  # a setext h2 replaces the h2 above


def test_markdown_title_from_first_h1_and_unclosed_fence() -> None:
    doc = parse(b"Intro text.\n\n# Real Title\n\n```\nnever closed\n", "notes.markdown")
    assert doc.metadata["title"] == "Real Title"
    assert doc.metadata["author"] is None and doc.metadata["date"] is None
    assert texts(doc)[-1] == ("code", "```\nnever closed")


def test_markdown_bad_front_matter_is_a_failure() -> None:
    failure = parse_bytes(b"---\ntitle: [unclosed\n---\nbody\n", doc_id="x.md", source="x.md")
    assert isinstance(failure, ParseFailure)
    assert failure.source == "x.md"
    assert "front matter is not valid YAML" in failure.reason


def test_markdown_impossible_front_matter_date_names_the_front_matter() -> None:
    """YAML reads 2024-02-30 as a date and its constructor raises ValueError: the reason
    says it is the front matter's date and how to keep it as text."""
    data = b"---\ntitle: T\ndate: 2024-02-30\n---\nbody\n"
    failure = parse_bytes(data, doc_id="x.md", source="x.md")
    assert isinstance(failure, ParseFailure)
    assert failure.reason == (
        "markdown: front matter has a value YAML cannot build: day is out of range for "
        "month (a date must be a real one; quote it to keep it as text)"
    )
    quoted = parse_bytes(data.replace(b"2024-02-30", b'"2024-02-30"'), doc_id="x.md", source="x.md")
    assert isinstance(quoted, Document) and quoted.metadata["date"] == "2024-02-30"


HTML = b"""<!doctype html>
<html><head>
  <meta charset="utf-8">
  <title>Feature store &amp; serving</title>
  <meta name="author" content="Dana Ortiz">
  <meta property="article:published_time" content="2023-11-05">
  <style>body { color: red }</style>
  <script>var secret = "not text";</script>
</head>
<body>
  <nav>Home</nav>
  <h1>Feature store</h1>
  <p>Features are computed <b>once</b>,
     and served   everywhere.</p>
  <h2>Example</h2>
  <pre>def f(x):
    return x + 1</pre>
  <table><tr><th>name</th><th>type</th></tr><tr><td>age</td><td>int</td></tr></table>
  <ul><li>online<li>offline<ul><li>nested</li></ul></li></ul>
  <script>alert("dropped")</script>
  <p>Caf\xc3\xa9 latency: 3&nbsp;ms.</p>
</body></html>
"""


def test_html_text_structure_and_metadata() -> None:
    doc = parse(HTML, "site/features.html")
    assert doc.metadata["title"] == "Feature store & serving"
    assert doc.metadata["author"] == "Dana Ortiz"
    assert doc.metadata["date"] == "2023-11-05"
    assert texts(doc) == [
        ("paragraph", "Home"),
        ("heading", "Feature store"),
        ("paragraph", "Features are computed once, and served everywhere."),
        ("heading", "Example"),
        ("code", "def f(x):\n    return x + 1"),
        ("table", "name | type\nage | int"),
        ("list", "- online\n- offline\n  - nested"),
        ("paragraph", "Caf\u00e9 latency: 3 ms."),  # &nbsp; collapses like a space
    ]
    assert doc.blocks[4].section == ("Feature store", "Example")
    assert "secret" not in doc.text and "alert" not in doc.text and "color" not in doc.text


def test_html_title_falls_back_to_h1_and_declared_charset() -> None:
    page = '<meta charset="latin-1"><h1>R\u00e9sum\u00e9</h1><p>ol\u00e9</p>'.encode("latin-1")
    doc = parse(page, "cv.htm")
    assert doc.metadata["title"] == "R\u00e9sum\u00e9"
    assert texts(doc) == [("heading", "R\u00e9sum\u00e9"), ("paragraph", "ol\u00e9")]


def test_text_paragraphs_and_title_from_name() -> None:
    data = b"First paragraph,\r\nsame paragraph.\r\n\r\n\r\nSecond one.\n   \nThird.\n"
    doc = parse(data, "notes/release.txt")
    assert doc.metadata["title"] == "release"
    assert texts(doc) == [
        ("paragraph", "First paragraph,\nsame paragraph."),
        ("paragraph", "Second one."),
        ("paragraph", "Third."),
    ]


def test_pdf_pages_and_info_metadata() -> None:
    data = make_pdf(
        [
            ["Quarterly report.", "Revenue grew (a lot) this quarter."],
            ["Second page: the outlook."],
            [],  # a page without text adds no block
            ["Last page."],
        ],
        {"Title": "Q3 Report", "Author": "Finance Team", "CreationDate": "D:20240315120000Z"},
    )
    doc = parse(data, "reports/q3.pdf")
    assert doc.metadata["title"] == "Q3 Report"
    assert doc.metadata["author"] == "Finance Team"
    assert doc.metadata["date"] == "2024-03-15T12:00:00+00:00"
    assert [b.page for b in doc.blocks] == [1, 2, 4]
    first, second, last = (doc.text[b.start : b.end] for b in doc.blocks)
    assert "Quarterly report." in first and "Revenue grew (a lot) this quarter." in first
    assert second == "Second page: the outlook."
    assert last == "Last page."


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog", "pdf: "),
        ("fake.pdf", b"<html>not a pdf</html>", "not a PDF file"),
        ("latin.txt", b"caf\xe9 au lait", "not valid UTF-8 text: byte 0xe9 at offset 3"),
        ("binary.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary content"),
        ("image.png", b"\x89PNG", "unknown file type .png"),
        ("empty.txt", b"  \n\n ", "no text to index"),
        ("scan.pdf", make_pdf([[]]), "no extractable text in 1 page(s)"),
    ],
)
def test_unreadable_files_are_failures_with_reasons(name: str, data: bytes, reason: str) -> None:
    failure = parse_bytes(data, doc_id=name, source=f"in/{name}")
    assert isinstance(failure, ParseFailure)
    assert failure.source == f"in/{name}"
    assert reason in failure.reason


def test_truncated_pdf_is_a_failure() -> None:
    data = make_pdf([["Some text that will be cut."]])
    failure = parse_bytes(data[: len(data) // 3], doc_id="cut.pdf", source="cut.pdf")
    assert isinstance(failure, ParseFailure)
    assert failure.reason.startswith("pdf: ")
