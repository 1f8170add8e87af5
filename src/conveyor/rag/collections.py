"""Store access for collections: versions, aliases, documents, chunks, lineage, the embedding
cache, and the index files of a version in the artifact store.

:class:`Collections` is the project's service ``rag`` (``project.service("rag")``): what the
build, the deletion, the server and the CLI read and write. A version's index and BM25 files
are one tar archive each in the artifact store (content-addressed), unpacked once per
process into ``.conveyor/rag/<digest>/``.

Aliases (``live``) are the store's pointers with history (:class:`~conveyor.store.pointers.
PointerTable`), as model aliases are: a move is conditional, recorded with who, when and
why, and a rollback restores the previous version. A move made in this process tells the
servers of this process at once (:func:`on_change`); another process sees it within
``rag.alias_poll_s``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.rag.events import RAG_ALIAS_MOVED
from conveyor.rag.settings import CollectionSpec, check_collection_name, rag_of
from conveyor.store.pointers import Change, Key, PointerTable, Previous, check_alias

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from sqlalchemy.orm import Session

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.events.log import EventLog
    from conveyor.project import Project
    from conveyor.rag.chunk_table import ChunkTable
    from conveyor.rag.settings import RagSpec
    from conveyor.rag.tables import RagAliasRecord, RagVersionRecord
    from conveyor.rag.types import Chunk, VectorIndex
    from conveyor.store.database import MetadataStore

__all__ = [
    "AliasMove",
    "Collections",
    "SqlEmbeddingCache",
    "StoredChunk",
    "Version",
    "on_change",
    "text_hash",
]

_STATUSES = ("building", "ready", "refused", "failed")
#: Chunk rows fetched at a time when a version's chunks are loaded.
_CHUNK_ROWS_PER_FETCH = 4096


def text_hash(text: str) -> str:
    """sha256 (hex) of a text: the embedding cache's key and a chunk's."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- in-process change notifications ------------------------------------------------------

_listeners: weakref.WeakSet[Any] = weakref.WeakSet()
_listeners_lock = threading.Lock()


def on_change(listener: Any) -> None:
    """Register an object whose ``changed(collection)`` is called when an alias of a
    collection moves or documents are deleted from it in this process (kept weakly)."""
    with _listeners_lock:
        _listeners.add(listener)


def _notify(collection: str) -> None:
    with _listeners_lock:
        found = list(_listeners)
    for listener in found:
        listener.changed(collection)


# -- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a collection, as recorded."""

    collection: str
    number: int
    id: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    parent: int | None
    run_id: str | None
    params: Mapping[str, Any]
    counts: Mapping[str, Any]
    index_digest: str | None
    bm25_digest: str | None
    gate: Mapping[str, Any] | None
    actor: str | None
    error: str | None
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.collection}@{self.number}"

    @property
    def namespace(self) -> str:
        """Its vector index's namespace (a ``postgresql://`` index's table suffix)."""
        return f"{self.collection}_v{self.number}"

    @classmethod
    def of(cls, row: RagVersionRecord, aliases: Iterable[str] = ()) -> Version:
        return cls(
            row.collection,
            row.number,
            row.id,
            row.status,
            row.created_at,
            row.finished_at,
            row.parent,
            row.run_id,
            dict(row.params or {}),
            dict(row.counts or {}),
            row.index_digest,
            row.bm25_digest,
            None if row.gate is None else dict(row.gate),
            row.actor,
            row.error,
            tuple(sorted(aliases)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "version": self.number,
            "id": self.id,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "parent": self.parent,
            "run_id": self.run_id,
            "aliases": list(self.aliases),
            "params": dict(self.params),
            "counts": dict(self.counts),
            "index_digest": self.index_digest,
            "bm25_digest": self.bm25_digest,
            "gate": None if self.gate is None else dict(self.gate),
            "actor": self.actor,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class AliasMove:
    """One move of a collection alias, from the history."""

    collection: str
    alias: str
    from_version: int | None
    to_version: int
    actor: str | None
    reason: str | None
    forced: bool
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "actor": self.actor,
            "reason": self.reason,
            "forced": self.forced,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk as stored: the index id, its document and citation."""

    id: int
    doc_id: str
    ordinal: int
    text: str
    start: int
    end: int
    n_tokens: int
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def as_chunk(self) -> Chunk:
        from conveyor.rag.types import Chunk

        return Chunk(
            self.doc_id,
            self.ordinal,
            self.text,
            self.start,
            self.end,
            self.n_tokens,
            self.metadata,
        )


def _stored(row: Any) -> StoredChunk:
    return StoredChunk(
        int(row[0]),
        row[1],
        int(row[2]),
        row[3],
        int(row[4]),
        int(row[5]),
        int(row[6]),
        dict(row[7] or {}),
    )


# -- aliases as pointers ---------------------------------------------------------------------


class _AliasPointers(PointerTable[int]):
    key_columns = ("collection", "alias")

    def __init__(self, store: MetadataStore, *, forcing: bool = False) -> None:
        from conveyor.rag.tables import RagAliasHistoryRecord, RagAliasRecord

        super().__init__(store, RagAliasRecord, RagAliasHistoryRecord)
        #: A refused version may take the alias (a forced move, or a rollback).
        self.forcing = forcing

    def describe(self, key: Key) -> str:
        return f"alias {key[0]}@{key[1]}"

    def missing(self, key: Key) -> NotFoundError:
        return NotFoundError(f"collection {key[0]!r} has no alias {key[1]!r}", collection=key[0])

    def resolve(self, session: Session, key: Key, value: Any) -> int:
        import sqlalchemy as sa

        from conveyor.rag.tables import RagVersionRecord as V

        row = session.scalars(
            sa.select(V).where(V.collection == key[0], V.number == int(value))
        ).first()
        if row is None:
            raise NotFoundError(
                f"collection {key[0]!r} has no version {value}", collection=key[0], version=value
            )
        if row.status != "ready" and not self.forcing:
            raise InvalidInputError(
                f"version {key[0]}@{value} is {row.status}: only a ready version can take an "
                "alias (a refused one with --force and a reason)",
                field="version",
            )
        if row.status in ("building", "failed"):
            raise InvalidInputError(
                f"version {key[0]}@{value} is {row.status}: it has no index to serve",
                field="version",
            )
        return int(row.number)

    def value(self, head: RagAliasRecord) -> int:
        return int(head.number)

    def write(
        self, session: Session, key: Key, head: RagAliasRecord | None, change: Change[int]
    ) -> RagAliasRecord:
        if head is None:
            head = self.head(collection=key[0], alias=key[1], number=change.after)
            session.add(head)
        else:
            head.number = change.after
        head.updated_at = change.at
        return head

    def record(self, head: RagAliasRecord, change: Change[int]) -> Any:
        return self.history(
            collection=head.collection,
            alias=head.alias,
            from_number=change.before,
            to_number=change.after,
            actor=change.actor,
            reason=change.reason,
            forced=bool(change.extra.get("forced", False)),
            at=change.at,
        )

    def previous(self, session: Session, key: Key, head: RagAliasRecord) -> Previous[int]:
        last = self.last(key, session)
        if last is None or last.from_number is None:
            raise InvalidInputError(
                f"alias {key[0]}@{key[1]} has no previous version to roll back to", field="alias"
            )
        return Previous(int(last.from_number), "rollback", last)


def _move_of(entry: Any) -> AliasMove:
    return AliasMove(
        entry.collection,
        entry.alias,
        entry.from_number,
        entry.to_number,
        entry.actor,
        entry.reason,
        bool(entry.forced),
        entry.at,
    )


# -- the service -------------------------------------------------------------------------------


class Collections:
    """Collections, their versions and aliases, in the project's metadata store."""

    def __init__(
        self,
        store: MetadataStore,
        artifacts: ArtifactStore,
        events: EventLog | None,
        spec: RagSpec,
        root: Path,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.events = events
        self.spec = spec
        self.root = root
        self._unpack_lock = threading.Lock()

    @classmethod
    def for_project(cls, project: Project) -> Collections:
        return cls(
            project.store,
            project.artifacts,
            project.events,
            rag_of(project.spec),
            Path(project.root),
        )

    def close(self) -> None:
        """Nothing to release: the backends are the project's."""

    # -- collections ---------------------------------------------------------------------

    def declared(self, name: str) -> CollectionSpec:
        """The collection's spec; NotFoundError naming the declared ones otherwise."""
        check_collection_name(name)
        found = self.spec.collections.get(name)
        if found is None:
            known = ", ".join(sorted(self.spec.collections)) or "none"
            raise NotFoundError(
                f"no collection {name!r} under rag.collections in conveyor.yaml "
                f"(declared: {known})",
                collection=name,
            )
        return found

    def names(self) -> list[str]:
        """Every collection, declared or built."""
        import sqlalchemy as sa

        from conveyor.rag.tables import RagCollectionRecord as C

        with self.store.read() as session:
            built = set(session.scalars(sa.select(C.name)))
        return sorted(built | set(self.spec.collections))

    def ensure(self, session: Session, name: str) -> Any:
        """The collection's row, created on its first build (locked for the caller's write)."""
        import sqlalchemy as sa

        from conveyor.rag.tables import RagCollectionRecord as C

        row = session.scalars(sa.select(C).where(C.name == name).with_for_update()).first()
        if row is None:
            row = C(name=name, purge_epoch=0, last_number=0)
            session.add(row)
            session.flush()
        return row

    def epoch(self, name: str) -> int:
        """How many deletions the collection has had (the retrieval cache's key part)."""
        from conveyor.rag.tables import RagCollectionRecord as C

        with self.store.read() as session:
            row = session.get(C, name)
            return 0 if row is None else int(row.purge_epoch)

    # -- versions ---------------------------------------------------------------------------

    def new_version(
        self, name: str, *, parent: int | None, params: Mapping[str, Any], actor: str | None
    ) -> Version:
        """A new version in status ``building``, numbered after the last."""
        from conveyor.rag.tables import RagVersionRecord as V
        from conveyor.store.types import utcnow

        with self.store.session() as session:
            coll = self.ensure(session, name)
            coll.last_number = int(coll.last_number) + 1
            row = V(
                id=uuid.uuid4().hex,
                collection=name,
                number=coll.last_number,
                status="building",
                created_at=utcnow(),
                parent=parent,
                params=dict(params),
                counts={},
                actor=actor,
            )
            session.add(row)
            session.flush()
            return Version.of(row)

    def finish_version(self, version_id: str, status: str, **changes: Any) -> Version:
        """Set a version's final status and what the build produced."""
        from conveyor.rag.tables import RagVersionRecord as V
        from conveyor.store.types import utcnow

        if status not in _STATUSES:
            raise InvalidInputError(f"unknown version status {status!r}", field="status")
        with self.store.session() as session:
            row = session.get(V, version_id)
            if row is None:
                raise NotFoundError(f"no collection version with id {version_id}")
            row.status = status
            row.finished_at = utcnow()
            for key, value in changes.items():
                setattr(row, key, value)
            session.flush()
            return Version.of(row)

    def versions(self, name: str) -> list[Version]:
        """Every version of ``name``, newest first, with the aliases pointing at each."""
        import sqlalchemy as sa

        from conveyor.rag.tables import RagAliasRecord as A
        from conveyor.rag.tables import RagVersionRecord as V

        with self.store.read() as session:
            rows = list(
                session.scalars(sa.select(V).where(V.collection == name).order_by(V.number.desc()))
            )
            aliases: dict[int, list[str]] = {}
            for alias, number in session.execute(
                sa.select(A.alias, A.number).where(A.collection == name)
            ):
                aliases.setdefault(int(number), []).append(alias)
            return [Version.of(r, aliases.get(r.number, ())) for r in rows]

    def version(self, name: str, ref: int | str | None = None) -> Version:
        """The version ``ref`` names: a number, ``"N"``, an alias, ``latest`` (the newest
        ready one) or None (the ``live`` alias)."""
        import sqlalchemy as sa

        from conveyor.rag.tables import RagVersionRecord as V

        number = self.number_of(name, ref)
        with self.store.read() as session:
            row = session.scalars(
                sa.select(V).where(V.collection == name, V.number == number)
            ).first()
            if row is None:
                raise NotFoundError(f"collection {name!r} has no version {number}", collection=name)
        found = [v for v in self.versions(name) if v.number == number]
        return found[0] if found else Version.of(row)

    def number_of(self, name: str, ref: int | str | None) -> int:
        """The version number ``ref`` names (see :meth:`version`)."""
        import sqlalchemy as sa

        from conveyor.rag.tables import RagVersionRecord as V

        check_collection_name(name)
        if ref is None:
            ref = "live"
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return int(ref)
        if ref == "latest":
            with self.store.read() as session:
                found = session.scalars(
                    sa.select(V.number)
                    .where(V.collection == name, V.status == "ready")
                    .order_by(V.number.desc())
                    .limit(1)
                ).first()
            if found is None:
                raise NotFoundError(f"collection {name!r} has no ready version", collection=name)
            return int(found)
        head = _AliasPointers(self.store).find((name, ref))
        if head is None:
            if not self.versions(name):
                raise NotFoundError(
                    f"collection {name!r} has not been built: conveyor rag build {name}",
                    collection=name,
                )
            raise NotFoundError(f"collection {name!r} has no alias {ref!r}", collection=name)
        return int(head.number)

    def parse_failures(self, version_id: str) -> list[tuple[str, str]]:
        import sqlalchemy as sa

        from conveyor.rag.tables import RagParseFailureRecord as F

        with self.store.read() as session:
            return [
                (s, r)
                for s, r in session.execute(
                    sa.select(F.source, F.reason).where(F.version_id == version_id).order_by(F.id)
                )
            ]

    # -- aliases ----------------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        import sqlalchemy as sa

        from conveyor.rag.tables import RagAliasRecord as A

        with self.store.read() as session:
            rows = session.execute(
                sa.select(A.alias, A.number).where(A.collection == name).order_by(A.alias)
            )
            return {alias: int(number) for alias, number in rows}

    def any_alias(self) -> bool:
        """Whether any collection has an alias (a version to answer from): one query."""
        import sqlalchemy as sa

        from conveyor.rag.tables import RagAliasRecord as A

        with self.store.read() as session:
            return session.scalars(sa.select(A.collection).limit(1)).first() is not None

    def move_alias(
        self,
        name: str,
        alias: str,
        number: int,
        *,
        actor: str | None,
        reason: str | None = None,
        forced: bool = False,
        expected: int | None = None,
    ) -> AliasMove:
        """Point ``alias`` of ``name`` at version ``number`` (ready, or refused when
        ``forced`` with a reason) and record the move."""
        check_alias(alias)
        if forced and not reason:
            raise InvalidInputError("a forced alias move needs a reason", field="reason")
        pointers = _AliasPointers(self.store, forcing=forced)
        moved = pointers.move(
            (name, alias), number, expected=expected, actor=actor, reason=reason, forced=forced
        )
        move = _move_of(moved.entry)
        self._moved(move, rollback=False)
        return move

    def rollback_alias(
        self, name: str, alias: str = "live", *, actor: str | None, reason: str | None = None
    ) -> AliasMove:
        """Move ``alias`` back to the version it pointed at before its last move."""
        # the previous holder was let in once already
        pointers = _AliasPointers(self.store, forcing=True)
        moved, _ = pointers.rollback((name, alias), actor=actor, reason=reason)
        move = _move_of(moved.entry)
        self._moved(move, rollback=True)
        return move

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        where: dict[str, Any] = {"collection": name}
        if alias is not None:
            where["alias"] = alias
        return [_move_of(e) for e in _AliasPointers(self.store).entries(**where)]

    def _moved(self, move: AliasMove, *, rollback: bool) -> None:
        if self.events is not None:
            self.events.record(
                RAG_ALIAS_MOVED,
                subject=move.collection,
                actor=move.actor,
                payload={
                    "alias": move.alias,
                    "from_version": move.from_version,
                    "to_version": move.to_version,
                    "reason": move.reason,
                    "forced": move.forced,
                    "rollback": rollback,
                },
            )
        _notify(move.collection)

    # -- chunks ------------------------------------------------------------------------------

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        """The chunks with these ids (deleted ones are simply absent)."""
        import sqlalchemy as sa

        from conveyor.rag.tables import RagChunkRecord as K

        wanted = [int(i) for i in ids if int(i) >= 0]
        out: dict[int, StoredChunk] = {}
        if not wanted:
            return out
        cols = (K.id, K.doc_id, K.ordinal, K.text, K.start, K.end, K.n_tokens, K.chunk_metadata)
        with self.store.read() as session:
            for start in range(0, len(wanted), 900):
                part = wanted[start : start + 900]
                for row in session.execute(sa.select(*cols).where(K.id.in_(part))):
                    out[int(row[0])] = _stored(row)
        return out

    def version_documents(self, version_id: str) -> list[dict[str, Any]]:
        """Lineage: the documents a version holds, each with its content hash, when that
        content was first built, and its chunk ids (the subject key is not shown)."""
        import sqlalchemy as sa

        from conveyor.rag.tables import RagChunkRecord as K
        from conveyor.rag.tables import RagDocumentRecord as D
        from conveyor.rag.tables import RagVersionDocumentRecord as VD

        out: dict[int, dict[str, Any]] = {}
        with self.store.read() as session:
            rows = session.execute(
                sa.select(D.id, D.doc_id, D.content_hash, D.created_at, D.subject)
                .join(VD, VD.document == D.id)
                .where(VD.version_id == version_id)
                .order_by(D.doc_id)
            )
            for row_id, doc_id, content_hash, created, subject in rows:
                out[int(row_id)] = {
                    "doc_id": doc_id,
                    "content_hash": content_hash,
                    "built_at": created.isoformat(),
                    "has_subject": subject is not None,
                    "chunk_ids": [],
                }
            for chunk_id, row_id in session.execute(
                sa.select(K.id, K.document).where(K.document.in_(list(out) or [-1])).order_by(K.id)
            ):
                out[int(row_id)]["chunk_ids"].append(int(chunk_id))
        return list(out.values())

    def version_chunks(self, version_id: str) -> ChunkTable:
        """Every chunk of a version (its lineage: the chunks of its document rows), in
        columns (:mod:`conveyor.rag.chunk_table`: a mapping of id to chunk, without an
        object per chunk)."""
        import sqlalchemy as sa

        from conveyor.rag.chunk_table import ChunkTable
        from conveyor.rag.tables import RagChunkRecord as K
        from conveyor.rag.tables import RagVersionDocumentRecord as VD

        # The metadata as the JSON text SQLite stores (the table keeps it as it is) instead
        # of a dict decoded by the column type and encoded again: a third of the load's
        # time at 200k chunks. PostgreSQL's driver hands JSONB over decoded either way.
        meta = sa.type_coerce(K.chunk_metadata, sa.Text)
        cols = (K.id, K.doc_id, K.ordinal, K.text, K.start, K.end, K.n_tokens, meta)
        with self.store.read() as session:
            rows = session.execute(
                sa.select(*cols)
                .join(VD, VD.document == K.document)
                .where(VD.version_id == version_id)
                .order_by(K.id)
                # Streamed, a few thousand rows at a time (a server-side cursor on
                # PostgreSQL): an ORM session otherwise fetches every row first, 200k Row
                # objects at once, whose memory the process kept after the load (about
                # 100 MB of a 200k-chunk version's resident memory).
                .execution_options(yield_per=_CHUNK_ROWS_PER_FETCH)
            )
            return ChunkTable.build(rows)

    # -- indexes ----------------------------------------------------------------------------

    def open_index(self, version: Version, folder: Path | None) -> VectorIndex:
        """The vector index ``version`` was built on, over ``folder`` (its files, unpacked):
        the URL stored with the version, whatever the collection's setting says now, except
        that a ``postgresql://`` one takes its password from the setting (the stored copy
        hides it) when that is ``postgresql://`` too."""
        from conveyor.backends import BackendURL
        from conveyor.rag.index import INDEX

        url = str(version.params["index_url"])
        spec = self.spec.collections.get(version.collection)
        now = None if spec is None else spec.index
        if url.startswith("postgresql") and now and now.startswith("postgresql"):
            url = now
        index: VectorIndex = INDEX.resolve(url).load(
            BackendURL.parse(url),
            folder,
            dimension=int(version.params["dimension"]),
            namespace=version.namespace,
        )
        return index

    # -- artifacts --------------------------------------------------------------------------

    def put_folder(self, folder: Path) -> str:
        """Store a folder's files as one tar archive (sorted names, no timestamps, so equal
        files give an equal digest); its digest."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    info = tarfile.TarInfo(path.relative_to(folder).as_posix())
                    info.size = path.stat().st_size
                    info.mtime = 0
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
        return self.artifacts.put(buffer.getvalue(), media_type="application/x-tar").digest

    def folder(self, digest: str) -> Path:
        """The files of an archive :meth:`put_folder` stored, unpacked once under
        ``.conveyor/rag/``."""
        target = self._folder_of(digest)
        with self._unpack_lock:
            if (target / ".complete").exists():
                return target
            payload = self.artifacts.get(digest)
            partial = target.with_name(target.name + f".{os.getpid()}.partial")
            partial.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=io.BytesIO(payload), mode="r") as tar:
                tar.extractall(partial, filter="data")
            (partial / ".complete").write_text("")
            if target.exists():
                import shutil

                shutil.rmtree(target)
            partial.rename(target)
        return target

    def _folder_of(self, digest: str) -> Path:
        hex_digest = digest.partition(":")[2] or digest
        return self.root / ".conveyor" / "rag" / hex_digest[:32]

    def forget_folder(self, digest: str) -> None:
        """Remove the unpacked copy of an archive (a deletion rewrote it)."""
        import shutil

        with self._unpack_lock:
            shutil.rmtree(self._folder_of(digest), ignore_errors=True)


class SqlEmbeddingCache:
    """The embedding cache (:class:`conveyor.rag.embed.EmbeddingStore`) over
    ``rag_embeddings``: vectors by (model identity, text hash), float32 bytes."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        import numpy as np
        import sqlalchemy as sa

        from conveyor.rag.tables import RagEmbeddingRecord as E

        out: dict[str, NDArray[np.float32]] = {}
        unique = list(dict.fromkeys(hashes))
        with self.store.read() as session:
            for start in range(0, len(unique), 900):
                part = unique[start : start + 900]
                rows = session.execute(
                    sa.select(E.text_hash, E.vector).where(E.model == model, E.text_hash.in_(part))
                )
                out.update({h: np.frombuffer(bytes(v), dtype=np.float32) for h, v in rows})
        return out

    def put_many(self, model: str, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        import numpy as np
        import sqlalchemy as sa

        from conveyor.rag.tables import RagEmbeddingRecord as E

        if not vectors:
            return
        with self.store.session() as session:
            present: set[str] = set()
            keys = list(vectors)
            for start in range(0, len(keys), 900):
                present.update(
                    session.scalars(
                        sa.select(E.text_hash).where(
                            E.model == model, E.text_hash.in_(keys[start : start + 900])
                        )
                    )
                )
            session.add_all(
                E(model=model, text_hash=h, vector=np.asarray(v, dtype=np.float32).tobytes())
                for h, v in vectors.items()
                if h not in present
            )

    def forget(self, hashes: Sequence[str]) -> int:
        """Remove the vectors of these texts under every model (a deletion)."""
        import sqlalchemy as sa

        from conveyor.rag.tables import RagEmbeddingRecord as E

        removed = 0
        with self.store.session() as session:
            for start in range(0, len(hashes), 900):
                part = list(hashes[start : start + 900])
                result = session.execute(sa.delete(E).where(E.text_hash.in_(part)))
                removed += int(getattr(result, "rowcount", 0) or 0)
        return removed
