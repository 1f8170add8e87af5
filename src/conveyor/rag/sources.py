"""Where a collection's documents come from: files and folders, a SQL query, a data set.

The collection's spec lists its sources under ``rag:``; each entry is one of these models,
told apart by ``kind``::

    sources:
      - {kind: files, path: docs, include: ["*.md", "*.pdf"], exclude: ["drafts/**"]}
      - {kind: sql, url: "postgresql://app@db/app", query: "SELECT id, body FROM articles",
         id_column: id, text_column: body, title_column: headline}
      - {kind: dataset, dataset: tickets@3, id_column: ticket_id, text_column: body,
         subject_column: customer_email}

Every source has ``iter_documents(context)``, which yields a
:class:`~conveyor.rag.types.Document` per readable file or row and a
:class:`~conveyor.rag.types.ParseFailure` (with its reason) per one that is not, and goes
on after a failure. Only a mistake in the source itself (a folder that does not exist, a
column the query does not return, a database that does not answer) raises, as a typed
error of :mod:`conveyor.errors`. Documents come in a stable order (files by path, rows as
the query or the version returns them), so a build is repeatable.

The :class:`SourceContext` is all a source needs from the project: its root (relative
paths and ``sqlite:///`` URLs are under it) and, for a ``dataset`` source only, the data
layer, opened on first use. ``SourceContext.for_project(project)`` makes one (passing the
``Project`` itself does the same); a test or a script without a project passes
``SourceContext(root)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.errors import ConfigError, NotFoundError
from conveyor.rag.parsing import FORMATS, normalize_date, parse_bytes
from conveyor.rag.types import Document, ParseFailure

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.data.layer import DataLayer
    from conveyor.project import Project

__all__ = [
    "DatasetSource",
    "FilesSource",
    "RagSource",
    "SQLSource",
    "SourceContext",
    "as_context",
    "iter_documents",
]

Item = Document | ParseFailure
_DEFAULT_INCLUDE = tuple(f"*{suffix}" for suffix in FORMATS)
_Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What sources read through: the project root and, lazily, the data layer."""

    root: Path
    data_layer: Callable[[], DataLayer] | None = None
    """Returns the project's data layer; only a ``dataset`` source calls it."""

    @classmethod
    def for_project(cls, project: Project) -> SourceContext:
        from conveyor.data.layer import DataLayer

        return cls(Path(project.root), lambda: project.service("data", DataLayer))

    def data(self) -> DataLayer:
        if self.data_layer is None:
            raise ConfigError(
                "a dataset source reads through a project's data layer: build the context "
                "with SourceContext.for_project(project)",
                field="data_layer",
            )
        return self.data_layer()


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None, min_length=1, max_length=200, description="Names the source in metadata."
    )
    metadata: dict[str, _Scalar] = Field(
        default_factory=dict,
        description="Fixed metadata on every document of this source (usable as a filter).",
    )


class FilesSource(_Base):
    """A file, or the files of a folder chosen by glob patterns."""

    kind: Literal["files"] = "files"
    path: str = Field(
        min_length=1, description="A file or a folder; relative paths are under the project."
    )
    include: list[str] = Field(
        default_factory=lambda: list(_DEFAULT_INCLUDE),
        description="Glob patterns of the files to read, relative to the folder: a pattern "
        "without '/' matches the file name, '**' matches any number of folders. "
        "Default: every type a parser reads.",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Glob patterns of files to skip (same syntax)."
    )
    recursive: bool = Field(True, description="Descend into sub-folders.")
    hidden: bool = Field(False, description="Also read files and folders whose name starts '.'.")
    max_bytes: int = Field(
        50_000_000, gt=0, description="A bigger file is a parse failure, not read."
    )

    def iter_documents(self, context: SourceContext | Project) -> Iterator[Item]:
        """A Document per readable file, a ParseFailure per other; ids are paths relative to
        ``path`` (the file's name when ``path`` is a file), ``source`` relative to the root."""
        context = as_context(context)
        base = Path(self.path)
        base = base if base.is_absolute() else context.root / base
        if base.is_file():
            yield self._read(base, base.name, context.root)
            return
        if not base.is_dir():
            raise NotFoundError(
                f"files source {self.path!r}: no file or folder at {base}", path=str(base)
            )
        for relative in self._walk(base):
            yield self._read(base / relative, relative, context.root)

    def _walk(self, base: Path) -> Iterator[str]:
        """Relative POSIX paths of the chosen files, sorted."""
        found: list[str] = []
        for folder, dirs, files in os.walk(base):
            rel_folder = Path(folder).relative_to(base).as_posix()
            prefix = "" if rel_folder == "." else rel_folder + "/"
            if not self.recursive:
                dirs.clear()
            elif not self.hidden:
                dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                if not self.hidden and file.startswith("."):
                    continue
                relative = prefix + file
                if any(_matches(relative, p) for p in self.include) and not any(
                    _matches(relative, p) for p in self.exclude
                ):
                    found.append(relative)
        return iter(sorted(found))

    def _read(self, file: Path, doc_id: str, root: Path) -> Item:
        try:
            source = file.relative_to(root).as_posix()
        except ValueError:
            source = file.as_posix()
        try:
            info = file.stat()
            if not stat.S_ISREG(info.st_mode):
                # Reading a FIFO waits for a writer and a device never ends: never opened.
                return ParseFailure(source, f"not a regular file ({_kind(info.st_mode)}): not read")
            if info.st_size > self.max_bytes:
                return ParseFailure(
                    source,
                    f"{info.st_size:,} bytes, over the source's max_bytes ({self.max_bytes:,})",
                )
            data = file.read_bytes()
        except OSError as exc:
            return ParseFailure(source, f"cannot read: {exc.strerror or exc}")
        extra = dict(self.metadata)
        if self.name:
            extra["source_name"] = self.name
        return parse_bytes(data, doc_id=doc_id, source=source, extra=extra)


class _Rows(_Base):
    """Documents from rows: which columns hold the id, the text and the metadata."""

    id_column: str = Field(min_length=1, description="The row's key: the document id.")
    text_column: str = Field(min_length=1, description="The document's text.")
    title_column: str | None = Field(None, min_length=1, description="The title.")
    author_column: str | None = Field(None, min_length=1, description="The author.")
    date_column: str | None = Field(None, min_length=1, description="The date.")
    subject_column: str | None = Field(
        None,
        min_length=1,
        description="The data subject's key (an email, a customer id): deleting by subject "
        "(GDPR) removes this document's chunks.",
    )
    metadata_columns: list[str] = Field(
        default_factory=list, description="More columns copied into the metadata by name."
    )
    format: Literal["text", "markdown", "html"] = Field(
        "text", description="How the text column is written (markdown: headings, code...)."
    )

    def _columns(self) -> dict[str, str]:
        """Metadata key -> column, the id and text columns first."""
        named = {
            "title": self.title_column,
            "author": self.author_column,
            "date": self.date_column,
            "subject": self.subject_column,
        }
        columns = {"id": self.id_column, "text": self.text_column}
        columns.update({k: v for k, v in named.items() if v is not None})
        columns.update({c: c for c in self.metadata_columns if c not in columns.values()})
        return columns

    def _check_columns(self, names: list[str], where: str) -> None:
        for key, column in self._columns().items():
            if column not in names:
                field = "metadata_columns" if key == column else f"{key}_column"
                raise NotFoundError(
                    f"{where} has no column {column!r} (the {field}); its columns are: "
                    f"{', '.join(names)}",
                    column=column,
                    field=field,
                )

    def _documents(self, tables: Iterator[pa.Table], label: str, where: str) -> Iterator[Item]:
        columns = self._columns()
        seen: set[str] = set()
        checked = False
        for table in tables:
            if not checked:
                self._check_columns(table.column_names, where)
                checked = True
            for row in table.select(list(dict.fromkeys(columns.values()))).to_pylist():
                yield self._document(row, columns, label, seen)

    def _document(
        self, row: dict[str, Any], columns: dict[str, str], label: str, seen: set[str]
    ) -> Item:
        key = row[columns["id"]]
        if key is None:
            return ParseFailure(f"{label}#?", f"the id column {self.id_column!r} is null")
        doc_id = str(key)
        source = f"{label}#{doc_id}"
        if doc_id in seen:
            return ParseFailure(source, f"duplicate id {doc_id!r}: only its first row is read")
        seen.add(doc_id)
        text = row[columns["text"]]
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                return ParseFailure(source, f"text column is not valid UTF-8: {exc.reason}")
        if text is None or not str(text).strip():
            return ParseFailure(source, f"the text column {self.text_column!r} is empty")
        text = str(text)
        metadata: dict[str, Any] = dict(self.metadata)
        for name, column in columns.items():
            if name not in ("id", "text"):
                metadata[name] = _json_scalar(row[column])
        metadata["date"] = normalize_date(metadata.get("date"))
        if self.name:
            metadata["source_name"] = self.name
        parsed = parse_bytes(
            text.encode("utf-8"),
            doc_id=doc_id,
            source=label,
            fmt=self.format,
            extra={k: v for k, v in metadata.items() if v is not None},
        )
        if isinstance(parsed, ParseFailure):
            return ParseFailure(source, parsed.reason)
        metadata = dict(parsed.metadata)
        if self.title_column is None and metadata.get("title") == PurePosixPath(doc_id).stem:
            metadata["title"] = None  # parse_bytes' fallback (a file's name), not for a row
        digest = hashlib.sha256(
            json.dumps({"text": text, "metadata": metadata}, sort_keys=True, default=str).encode()
        ).hexdigest()
        return Document(
            id=doc_id, text=parsed.text, content_hash=digest, metadata=metadata,
            blocks=parsed.blocks,
        )  # fmt: skip


class SQLSource(_Rows):
    """The rows of a query, one document per row (any database the data layer's SQL source
    reads: SQLite, PostgreSQL, MySQL/MariaDB)."""

    kind: Literal["sql"] = "sql"
    url: str = Field(
        min_length=1,
        description="A SQLAlchemy URL; ${VAR} reads the environment, a relative sqlite:/// "
        "path is under the project.",
    )
    query: str = Field(min_length=1, description="A SELECT returning the id and text columns.")
    chunk_size: int = Field(10_000, gt=0, description="Rows fetched per round trip.")

    def __repr__(self) -> str:
        from conveyor.data.sources.redaction import redact_url

        return f"SQLSource(name={self.name!r}, url={redact_url(self.url)!r})"

    def iter_documents(self, context: SourceContext | Project) -> Iterator[Item]:
        """A Document per row; ids are the id column's values as text."""
        context = as_context(context)
        from conveyor.data.sources.spec import source_from_spec
        from conveyor.data.sources.sql import SQLSource as RowReader

        reader = source_from_spec(
            {"kind": "sql", "url": self.url, "query": self.query, "chunk_size": self.chunk_size},
            root=context.root,
            where=f"rag source {self.name or 'sql'}",
        )
        assert isinstance(reader, RowReader)
        label = f"sql:{self.name or reader.name}"
        yield from self._documents(reader.iter_chunks(), label, f"the query of {label}")


class DatasetSource(_Rows):
    """A version of a data-layer data set, one document per row; reading it is recorded
    as a ``data.read`` audit event like every read of a version."""

    kind: Literal["dataset"] = "dataset"
    dataset: str = Field(
        min_length=1, description="name@version, name@latest or name (the latest version)."
    )

    @field_validator("dataset")
    @classmethod
    def _ref(cls, value: str) -> str:
        name, _, number = value.partition("@")
        if not name or (number and number != "latest" and not number.isdigit()):
            raise ValueError(f"expected name@NUMBER, name@latest or name, got {value!r}")
        return value

    def iter_documents(self, context: SourceContext | Project) -> Iterator[Item]:
        """A Document per row of the version; ``metadata['dataset_version']`` is its id."""
        layer = as_context(context).data()
        version = layer.versions.resolve(self.dataset)
        table = layer.versions.read(version, purpose="rag ingestion")
        label = f"dataset:{version.ref}"
        documents = self._documents(iter([table]), label, f"data set version {version.ref}")
        for item in documents:
            if isinstance(item, Document):
                metadata = {**item.metadata, "dataset_version": version.id}
                yield Document(item.id, item.text, item.content_hash, metadata, item.blocks)
            else:
                yield item


RagSource = Annotated[FilesSource | SQLSource | DatasetSource, Field(discriminator="kind")]
"""One entry of a collection's ``sources:``, told apart by ``kind``."""


def as_context(context: SourceContext | Project) -> SourceContext:
    """``context`` itself, or the context of a project (its root and its data layer)."""
    return context if isinstance(context, SourceContext) else SourceContext.for_project(context)


def iter_documents(
    sources: FilesSource | SQLSource | DatasetSource | list[Any],
    context: SourceContext | Project,
) -> Iterator[Item]:
    """The documents and failures of one source or of several, in order."""
    context = as_context(context)
    for source in sources if isinstance(sources, list) else [sources]:
        yield from source.iter_documents(context)


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, for a failure's reason."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def _json_scalar(value: Any) -> Any:
    """A metadata value a JSON record and a filter can hold."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    """A glob as a regex over relative POSIX paths: ``**/`` is any number of folders,
    ``*`` and ``?`` stay inside one path component."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.IGNORECASE)


def _matches(relative: str, pattern: str) -> bool:
    """A pattern without '/' matches the file name; one with '/' the whole relative path."""
    pattern = pattern.removeprefix("./")
    target = relative if "/" in pattern else relative.rpartition("/")[2]
    return _pattern(pattern).match(target) is not None
