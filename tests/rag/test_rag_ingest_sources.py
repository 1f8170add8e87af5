"""Sources: a folder of files chosen by globs, a SQL query on SQLite and on the real
PostgreSQL, a data-set version through the data layer; failures recorded, iteration goes on."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError

from conveyor.errors import BackendUnavailableError, ConfigError, NotFoundError
from conveyor.project import Project, init_project
from conveyor.rag.sources import (
    DatasetSource,
    FilesSource,
    RagSource,
    SourceContext,
    SQLSource,
    iter_documents,
)
from conveyor.rag.types import Document, ParseFailure


def split(items: Iterator[Document | ParseFailure]) -> tuple[list[Document], list[ParseFailure]]:
    all_items = list(items)
    docs = [i for i in all_items if isinstance(i, Document)]
    failures = [i for i in all_items if isinstance(i, ParseFailure)]
    assert len(docs) + len(failures) == len(all_items)
    return docs, failures


@pytest.fixture
def root(tmp_path: Path) -> Path:
    files = {
        "kb/a-intro.md": b"# Intro\n\nWelcome to the knowledge base.\n",
        "kb/b-broken.pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R",
        "kb/c-latin.txt": b"d\xe9j\xe0 vu",
        "kb/d-faq.txt": b"Question one?\n\nAnswer one.\n",
        "kb/logo.png": b"\x89PNG\r\n\x1a\n",
        "kb/.cache/x.md": b"# hidden\n",
        "kb/guides/setup.html": b"<title>Setup</title><h1>Setup</h1><p>Run it.</p>",
        "kb/guides/deep/more.markdown": b"Deep text.\n",
        "kb/drafts/wip.md": b"# Draft\n\nNot ready.\n",
    }
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return tmp_path


def test_files_source_reads_a_folder_in_order_and_records_failures(root: Path) -> None:
    source = FilesSource(path="kb", exclude=["drafts/**"], metadata={"team": "docs"})
    items = list(source.iter_documents(SourceContext(root)))
    # Sorted by path; the broken PDF and the Latin-1 text fail and the next files still come.
    assert [getattr(i, "id", None) or i.source for i in items] == [
        "a-intro.md",
        "kb/b-broken.pdf",
        "kb/c-latin.txt",
        "d-faq.txt",
        "guides/deep/more.markdown",
        "guides/setup.html",
    ]
    docs, failures = split(iter(items))
    assert failures[0].reason.startswith("pdf: ")
    assert "not valid UTF-8" in failures[1].reason
    intro = docs[0]
    assert intro.metadata["source"] == "kb/a-intro.md"
    assert intro.metadata["title"] == "Intro"
    assert intro.metadata["team"] == "docs"
    assert intro.content_hash == hashlib.sha256((root / "kb/a-intro.md").read_bytes()).hexdigest()
    assert docs[-1].metadata["title"] == "Setup" and docs[-1].metadata["format"] == "html"


def test_files_source_globs_recursion_and_limits(root: Path) -> None:
    context = SourceContext(root)

    def ids(source: FilesSource) -> list[str]:
        return [getattr(i, "id", None) or i.source for i in source.iter_documents(context)]

    assert ids(FilesSource(path="kb", include=["*.md", "*.markdown"])) == [
        "a-intro.md",
        "drafts/wip.md",
        "guides/deep/more.markdown",
    ]
    assert ids(FilesSource(path="kb", include=["guides/**"])) == [
        "guides/deep/more.markdown",
        "guides/setup.html",
    ]
    assert ids(FilesSource(path="kb", include=["*.md"], recursive=False)) == ["a-intro.md"]
    assert ".cache/x.md" in ids(FilesSource(path="kb", include=["*.md"], hidden=True))
    # An explicit "*" takes files no parser reads: each is a failure naming its type.
    _, failures = split(FilesSource(path="kb", include=["*.png"]).iter_documents(context))
    assert failures == [ParseFailure("kb/logo.png", failures[0].reason)]
    assert failures[0].reason.startswith("unknown file type .png")
    # One file, by path.
    docs, _ = split(FilesSource(path=str(root / "kb/d-faq.txt")).iter_documents(context))
    assert [d.id for d in docs] == ["d-faq.txt"]
    _, failures = split(FilesSource(path="kb/d-faq.txt", max_bytes=5).iter_documents(context))
    assert "over the source's max_bytes (5)" in failures[0].reason
    with pytest.raises(NotFoundError, match="no file or folder"):
        list(FilesSource(path="missing").iter_documents(context))


@pytest.mark.timeout(30)
def test_files_source_fails_what_is_not_a_regular_file(root: Path) -> None:
    """A FIFO (or a link to a device) among the files is a failure, never read: reading a
    FIFO waits for a writer forever and a device never ends, so the build would hang."""
    os.mkfifo(root / "kb/e-pipe.txt")
    (root / "kb/f-zero.txt").symlink_to("/dev/zero")
    items = list(FilesSource(path="kb", include=["*.txt"]).iter_documents(SourceContext(root)))
    docs, failures = split(iter(items))
    assert [d.id for d in docs] == ["d-faq.txt"]
    reasons = {f.source: f.reason for f in failures}
    assert set(reasons) == {"kb/c-latin.txt", "kb/e-pipe.txt", "kb/f-zero.txt"}
    assert reasons["kb/e-pipe.txt"] == "not a regular file (a FIFO): not read"
    assert reasons["kb/f-zero.txt"] == "not a regular file (a device): not read"


ROWS = [
    (1, "Refunds take five days.", "Refunds", "Support", "2024-01-02", "ann@example.org", "faq"),
    (2, "Shipping is free over 50 EUR.", "Shipping", None, None, "bob@example.org", "faq"),
    (3, "   ", "Empty", None, None, None, "faq"),
    (2, "A second row with id 2.", "Dup", None, None, None, "faq"),
]


def _source(url: str, **options: Any) -> SQLSource:
    return SQLSource(
        name="articles",
        url=url,
        query="SELECT id, body, headline, writer, created, email, tag "
        "FROM articles ORDER BY id, headline DESC",
        id_column="id",
        text_column="body",
        title_column="headline",
        author_column="writer",
        date_column="created",
        subject_column="email",
        metadata_columns=["tag"],
        **options,
    )


def _fill(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE articles (id integer, body text, headline text, writer text, "
                "created date, email text, tag text)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO articles VALUES (:i, :b, :h, :w, :c, :e, :t)"),
            [
                dict(
                    zip(
                        "ibhwcet",
                        (*r[:4], r[4] and dt.date.fromisoformat(r[4]), *r[5:]),
                        strict=True,
                    )
                )
                for r in ROWS
            ],
        )
    engine.dispose()


def _check_rows(items: list[Document | ParseFailure]) -> None:
    docs, failures = split(iter(items))
    assert [d.id for d in docs] == ["1", "2"]
    first = docs[0]
    assert first.text == "Refunds take five days."
    assert first.metadata["source"] == "sql:articles"
    assert first.metadata["title"] == "Refunds"
    assert first.metadata["author"] == "Support"
    assert first.metadata["date"] == "2024-01-02"
    assert first.metadata["subject"] == "ann@example.org"
    assert first.metadata["tag"] == "faq"
    assert first.blocks and first.text[first.blocks[0].start : first.blocks[0].end] == first.text
    assert docs[1].metadata["author"] is None and docs[1].metadata["date"] is None
    assert [(f.source, f.reason) for f in failures] == [
        ("sql:articles#2", "duplicate id '2': only its first row is read"),
        ("sql:articles#3", "the text column 'body' is empty"),
    ]


def test_sql_source_on_sqlite(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _fill(sa.create_engine(f"sqlite:///{tmp_path}/data/kb.db"))
    source = _source("sqlite:///data/kb.db", chunk_size=2)  # relative: under the root
    items = list(source.iter_documents(SourceContext(tmp_path)))
    _check_rows(items)
    again = list(source.iter_documents(SourceContext(tmp_path)))
    assert [d.content_hash for d in again if isinstance(d, Document)] == [
        d.content_hash for d in items if isinstance(d, Document)
    ]
    with sa.create_engine(f"sqlite:///{tmp_path}/data/kb.db").begin() as conn:
        conn.execute(sa.text("UPDATE articles SET tag = 'billing' WHERE id = 1"))
    changed = [d for d in source.iter_documents(SourceContext(tmp_path)) if isinstance(d, Document)]
    # The row's hash covers its metadata: a changed column re-embeds it, others keep theirs.
    assert changed[0].content_hash != items[0].content_hash  # type: ignore[union-attr]
    assert changed[1].content_hash == items[1].content_hash  # type: ignore[union-attr]


def test_sql_source_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    _fill(sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1)))
    _check_rows(list(_source(pg_url).iter_documents(SourceContext(tmp_path))))


def test_sql_source_mistakes_raise_typed_errors(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _fill(sa.create_engine(f"sqlite:///{tmp_path}/data/kb.db"))
    context = SourceContext(tmp_path)
    wrong = _source("sqlite:///data/kb.db").model_copy(update={"text_column": "content"})
    with pytest.raises(NotFoundError, match="no column 'content' \\(the text_column\\)"):
        list(wrong.iter_documents(context))
    down = _source("postgresql://nobody:s3cret@127.0.0.1:1/none")
    with pytest.raises(BackendUnavailableError) as caught:
        list(down.iter_documents(context))
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(down)


def test_sql_rows_in_markdown(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/md.db")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE pages (slug text, body text)"))
        conn.execute(
            sa.text("INSERT INTO pages VALUES ('p1', :b)"),
            {"b": "# Title\n\nText.\n\n```\ncode\n```\n"},
        )
    engine.dispose()
    source = SQLSource(
        url=f"sqlite:///{tmp_path}/md.db",
        query="SELECT slug, body FROM pages",
        id_column="slug",
        text_column="body",
        format="markdown",
    )
    (doc,) = source.iter_documents(SourceContext(tmp_path))
    assert isinstance(doc, Document)
    assert [b.kind for b in doc.blocks] == ["heading", "paragraph", "code"]
    assert doc.metadata["title"] == "Title"


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    init_project(tmp_path, name="ragdata")
    with Project.open(tmp_path) as opened:
        yield opened


def test_dataset_source_through_the_data_layer(project: Project) -> None:
    table = pa.table(
        {
            "ticket": ["t-1", "t-2", "t-3"],
            "body": ["Printer is on fire.", None, "Password reset loops."],
            "customer": ["c-9", "c-8", "c-9"],
            "opened": [dt.date(2024, 5, 1), dt.date(2024, 5, 2), dt.date(2024, 5, 3)],
        }
    )
    version = project.data.ingest("tickets", table, new=True).version
    assert version is not None
    source = DatasetSource(
        dataset="tickets@1",
        id_column="ticket",
        text_column="body",
        subject_column="customer",
        date_column="opened",
    )
    context = SourceContext.for_project(project)
    docs, failures = split(source.iter_documents(context))
    assert [d.id for d in docs] == ["t-1", "t-3"]
    assert docs[0].metadata["source"] == "dataset:tickets@1"
    assert docs[0].metadata["dataset_version"] == version.id
    assert docs[0].metadata["subject"] == "c-9"
    assert docs[0].metadata["date"] == "2024-05-01"
    assert docs[0].metadata["title"] is None  # no title column: not the id
    assert failures == [ParseFailure("dataset:tickets@1#t-2", "the text column 'body' is empty")]
    # "tickets" alone is the latest version; a missing version is a NotFoundError.
    latest = DatasetSource(dataset="tickets", id_column="ticket", text_column="body")
    assert [d.id for d in split(latest.iter_documents(project))[0]] == ["t-1", "t-3"]
    with pytest.raises(NotFoundError, match="tickets@7"):
        list(DatasetSource(dataset="tickets@7", id_column="ticket", text_column="body")
             .iter_documents(context))  # fmt: skip
    with pytest.raises(ConfigError, match="data layer"):
        list(source.iter_documents(SourceContext(project.root)))


def test_source_models_from_spec_entries(root: Path) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(list[RagSource])
    parsed = adapter.validate_python(
        [
            {"kind": "files", "path": "kb/guides"},
            {"kind": "dataset", "dataset": "x@2", "id_column": "id", "text_column": "t"},
        ]
    )
    assert isinstance(parsed[0], FilesSource) and isinstance(parsed[1], DatasetSource)
    docs, _ = split(iter_documents(parsed[:1], SourceContext(root)))
    assert [d.id for d in docs] == ["deep/more.markdown", "setup.html"]
    with pytest.raises(ValidationError, match="extra"):
        adapter.validate_python([{"kind": "files", "path": "kb", "glob": "*.md"}])
    with pytest.raises(ValidationError, match="name@NUMBER"):
        DatasetSource(dataset="x@two", id_column="id", text_column="t")
