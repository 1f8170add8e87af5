"""Building a collection: a new, immutable version from its sources, incrementally.

::

    result = build_collection(project, "docs", actor="ana")
    result.version.number, result.counts["embedded_chunks"], result.moved

A build is a pipeline run (``kind rag.build`` in the run history) and, step by step:

1. **Read** every source (:mod:`conveyor.rag.sources`). A source that cannot be parsed is a
   parse failure recorded with its reason (``rag_parse_failures``), never the build's end.
2. **Diff** by content: a document whose (id, content hash) was already chunked with the same
   chunking settings and encoder identity keeps its document row, its chunks and their
   vectors; only new and changed documents are chunked (:mod:`conveyor.rag.chunking`) and
   embedded (through the embedding cache, :class:`~conveyor.rag.embed.CachedEmbedder`).
   A document of the parent version that no source yields any more is not in the new one.
3. **Index** every chunk of the version: the vector index named by the collection's URL
   (:data:`conveyor.rag.index.INDEX`; ``exact://`` under ``exact_below`` chunks when no URL
   is set) and BM25 (:class:`~conveyor.rag.lexical.BM25Index`), both keyed by the chunks'
   int64 row ids. An encoder whose vectors do not have the index's dimension is refused,
   naming both numbers. The files go to the artifact store (content-addressed, one tar
   each); a ``postgresql://`` index is a table named ``<collection>_v<number>``.
4. **Gate**: with an eval set configured (``gate.eval_set``), the new version's nDCG@10 is
   measured and compared with the live version's on the same set
   (:func:`conveyor.rag.evaluation.ndcg_gate`); a version more than ``tolerance`` below is
   recorded as ``refused`` and the alias stays where it is, unless ``force`` (with a
   reason, recorded). The convex-fusion weight is tuned on the same set and stored with
   the version.
5. **Promote**: a ready version takes the collection's alias (``live``).

A build's run beats while it works (every ``stale_after_s / 4`` seconds, at most 5 s). A
build whose process died (kill -9, a lost machine) leaves its version ``building`` and its
run ``running``; the next build of the collection fails both ("interrupted") once the run
has not beaten for ``stale_after_s``, and reuses the documents it had chunked. Nothing of
it was live: the alias moves only after the version is finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConcurrentUpdateError, ConveyorError, InvalidInputError
from conveyor.rag.events import RAG_VERSION_BUILT

log = logging.getLogger("conveyor.rag")

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from conveyor.project import Project
    from conveyor.rag.collections import Collections, Version
    from conveyor.rag.settings import CollectionSpec
    from conveyor.rag.types import Document, Embedder

__all__ = ["BuildResult", "build_collection", "chunker_digest", "index_url_for"]

RUN_KIND = "rag.build"
_EMBED_BATCH = 512  # chunks embedded and written at a time (bounded memory)
#: Seconds without a heartbeat after which a build's run is taken for dead.
STALE_AFTER_S = 60.0
_BEAT_S = 5.0  # the longest interval between a build's heartbeats


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build made: the version, its counts, whether the alias moved, the gate."""

    version: Version
    counts: Mapping[str, int]
    moved: bool
    alias: str
    gate: Mapping[str, Any] | None = None
    failures: tuple[tuple[str, str], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.version.collection,
            "version": self.version.number,
            "status": self.version.status,
            "alias": self.alias,
            "alias_moved": self.moved,
            "counts": dict(self.counts),
            "gate": None if self.gate is None else dict(self.gate),
            "parse_failures": [{"source": s, "reason": r} for s, r in self.failures],
            "run_id": self.version.run_id,
        }


def chunker_digest(spec: CollectionSpec, model: str) -> str:
    """What a document's chunks depend on besides its content: the chunking settings and
    the encoder's identity (its vectors). Equal digest, equal chunks and vectors."""
    body = json.dumps({"chunking": spec.chunking.model_dump(), "model": model}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def index_url_for(spec: CollectionSpec, n_chunks: int) -> str:
    """The index URL of a version: the collection's, or exact search when it is small."""
    if spec.index:
        return spec.index
    return "exact://" if n_chunks < spec.exact_below else "hnsw://"


def build_collection(
    project: Project,
    name: str,
    *,
    actor: str | None = None,
    force: bool = False,
    reason: str | None = None,
    embedder: Embedder | None = None,
    stale_after_s: float = STALE_AFTER_S,
) -> BuildResult:
    """Build a new version of collection ``name`` (see the module). ``embedder`` replaces
    the one the spec describes (tests, a caller holding one open). ``stale_after_s``: how
    long a build of the collection left ``building`` goes without a heartbeat before this
    one fails it as interrupted."""
    from conveyor.rag.collections import Collections

    if force and not reason:
        raise InvalidInputError("a forced build needs a reason", field="reason")
    if (
        isinstance(stale_after_s, bool)
        or not isinstance(stale_after_s, int | float)
        or not stale_after_s > 0
    ):
        raise InvalidInputError(
            f"stale_after_s must be a number of seconds > 0, got {stale_after_s!r}",
            field="stale_after_s",
        )
    collections = project.service("rag", Collections)
    spec = collections.declared(name)
    if not spec.sources:
        raise InvalidInputError(
            f"collection {name!r} has no sources under rag.collections.{name}.sources",
            field="sources",
        )
    if embedder is None:
        from conveyor.rag.api import shared_embedder

        embedder = shared_embedder(spec)
    _fail_interrupted(project, collections, name, stale_after_s)
    aliases = collections.aliases(name)
    parent = aliases.get(spec.alias)
    chunker = chunker_digest(spec, embedder.model)
    params = {
        "chunking": spec.chunking.model_dump(),
        "embedding": spec.embedding.model_dump(),
        "model": embedder.model,
        "dimension": embedder.dimension,
        "max_tokens": embedder.max_tokens,
        "chunker": chunker,
        "retrieval": dict(spec.retrieval),
        "sources": [s.model_dump() for s in spec.sources],
    }
    version = collections.new_version(name, parent=parent, params=params, actor=actor)
    run = project.store.runs.start(
        RUN_KIND,
        version.ref,
        params={"collection": name, "version": version.number, "parent": parent},
        tags={"actor": actor},
        project=project.name,
    )
    builder = _Builder(project, collections, spec, version, embedder, chunker)
    try:
        with _beating(project, run.id, min(_BEAT_S, stale_after_s / 4)):
            result = builder.run(run.id, parent, force=force, reason=reason)
    except BaseException as exc:
        message = exc.message if isinstance(exc, ConveyorError) else f"{type(exc).__name__}: {exc}"
        failed = collections.finish_version(
            version.id, "failed", error=message[:2000], run_id=run.id
        )
        project.store.runs.finish(run.id, "failed", error=message[:2000])
        _emit(project, failed, actor, {})
        raise
    project.store.runs.log_metrics(
        run.id, {k: float(v) for k, v in result.counts.items() if isinstance(v, int)}
    )
    project.store.runs.finish(run.id, "succeeded")
    return result


@contextlib.contextmanager
def _beating(project: Project, run_id: str, every: float) -> Iterator[None]:
    """Stamp the run's heartbeat every ``every`` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                project.store.runs.heartbeat(run_id)
            except Exception:  # a missed beat is not the build's failure
                log.warning("rag: the heartbeat of build run %s failed", run_id, exc_info=True)

    beating = threading.Thread(target=beat, name="conveyor-rag-build-beat", daemon=True)
    beating.start()
    try:
        yield
    finally:
        stop.set()
        beating.join(30)


def _fail_interrupted(
    project: Project, collections: Collections, name: str, stale_after_s: float
) -> None:
    """Fail the versions of ``name`` left ``building`` by a build whose process died, and
    their runs: the run has not beaten for ``stale_after_s`` (or never started, and the
    version is that old). A run that beats meanwhile keeps its version."""
    from datetime import timedelta

    from conveyor.store.types import utcnow

    left = [v for v in collections.versions(name) if v.status == "building"]
    if not left:
        return
    runs = project.store.runs
    older = timedelta(seconds=stale_after_s)
    stale = {r.name: r for r in runs.stale(older_than=older, kind=RUN_KIND)}
    for version in left:
        why = (
            f"interrupted: the process building {version.ref} stopped (no heartbeat for "
            f"{stale_after_s:g} s when the next build started); it died or was killed"
        )
        run = stale.get(version.ref)
        if run is not None:
            try:
                runs.update(run.id, expected_version=run.version, status="failed", error=why)
            except ConcurrentUpdateError:
                continue  # it beat meanwhile: alive after all
        elif (
            runs.list(kind=RUN_KIND, name=version.ref, status="running", limit=1).items
            or version.created_at > utcnow() - older
        ):
            continue  # a build in progress
        failed = collections.finish_version(
            version.id, "failed", error=why, run_id=None if run is None else run.id
        )
        _emit(project, failed, failed.actor, {})


class _Builder:
    """One build's state: the diff, the chunks, the indexes."""

    def __init__(
        self,
        project: Project,
        collections: Collections,
        spec: CollectionSpec,
        version: Version,
        embedder: Embedder,
        chunker: str,
    ) -> None:
        from conveyor.rag.collections import SqlEmbeddingCache
        from conveyor.rag.embed import CachedEmbedder

        self.project = project
        self.collections = collections
        self.store = collections.store
        self.spec = spec
        self.version = version
        self.name = version.collection
        self.inner = embedder
        self.embedder = CachedEmbedder(embedder, SqlEmbeddingCache(self.store))
        self.chunker = chunker

    # -- the steps -----------------------------------------------------------------------

    def run(
        self, run_id: str, parent: int | None, *, force: bool, reason: str | None
    ) -> BuildResult:
        documents, failures = self._read()
        known = self._known_rows()
        parent_docs = self._parent_documents(parent)
        reused_rows: list[int] = []
        fresh: list[Document] = []
        for doc in documents:
            row = known.get((doc.id, doc.content_hash))
            if row is None:
                fresh.append(doc)
            else:
                reused_rows.append(row)
        new_rows, embedded = self._add_documents(fresh)
        rows = reused_rows + new_rows
        self._link(rows, failures)
        ids, texts, vectors = self._version_chunks()
        if len(ids) == 0:
            raise InvalidInputError(
                f"collection {self.name!r}: the sources yielded no chunk "
                f"({len(documents)} documents, {len(failures)} parse failures)",
                field="sources",
            )
        index_url = index_url_for(self.spec, len(ids))
        index_digest, index_params = self._vector_index(index_url, ids, vectors)
        bm25_digest, bm25_params = self._bm25(ids, texts)
        doc_ids = {d.id for d in documents}
        counts = {
            "documents": len(documents),
            "chunks": len(ids),
            "new_documents": sum(1 for d in fresh if d.id not in parent_docs),
            "changed_documents": sum(1 for d in fresh if d.id in parent_docs),
            "removed_documents": sum(1 for d in parent_docs if d not in doc_ids),
            "reused_documents": len(reused_rows),
            "embedded_chunks": embedded,
            "reused_chunks": len(ids) - embedded,
            "encoded_texts": self.embedder.misses,
            "parse_failures": len(failures),
        }
        params = {
            **self.version.params,
            "index_url": _public_url(index_url),
            "index": index_params,
            "bm25": bm25_params,
        }
        changes: dict[str, Any] = {
            "params": params,
            "counts": counts,
            "index_digest": index_digest,
            "bm25_digest": bm25_digest,
            "run_id": run_id,
        }
        built = self.collections.finish_version(self.version.id, "building", **changes)
        gate, tuned = self._gate(built, parent)
        status = "ready"
        if gate is not None:
            changes["gate"] = gate
            if not gate["passed"]:
                status = "refused"
        if tuned is not None:
            params["fusion"] = tuned
            changes["params"] = params
        final = self.collections.finish_version(self.version.id, status, **changes)
        moved = False
        if status == "ready" or force:
            note = reason if status == "ready" else f"forced past the gate: {reason}"
            self.collections.move_alias(
                self.name,
                self.spec.alias,
                final.number,
                actor=final.actor,
                reason=note or f"built {final.ref}",
                forced=status != "ready",
            )
            moved = True
        final = self.collections.version(self.name, final.number)
        _emit(self.project, final, final.actor, counts)
        return BuildResult(final, counts, moved, self.spec.alias, gate, tuple(failures))

    def _read(self) -> tuple[list[Document], list[tuple[str, str]]]:
        from conveyor.rag.sources import SourceContext, iter_documents
        from conveyor.rag.types import Document

        context = SourceContext.for_project(self.project)
        documents: list[Document] = []
        failures: list[tuple[str, str]] = []
        seen: set[str] = set()
        for item in iter_documents(list(self.spec.sources), context):
            if isinstance(item, Document):
                if item.id in seen:
                    failures.append((item.id, "a second document with this id (kept the first)"))
                    continue
                seen.add(item.id)
                documents.append(item)
            else:
                failures.append((item.source, item.reason))
        return documents, failures

    def _known_rows(self) -> dict[tuple[str, str], int]:
        """(doc id, content hash) -> the document row already chunked with this chunker."""
        import sqlalchemy as sa

        from conveyor.rag.tables import RagDocumentRecord as D

        with self.store.read() as session:
            rows = session.execute(
                sa.select(D.doc_id, D.content_hash, sa.func.max(D.id))
                .where(D.collection == self.name, D.chunker == self.chunker)
                .group_by(D.doc_id, D.content_hash)
            )
            return {(d, h): int(i) for d, h, i in rows}

    def _parent_documents(self, parent: int | None) -> set[str]:
        import sqlalchemy as sa

        from conveyor.rag.tables import RagDocumentRecord as D
        from conveyor.rag.tables import RagVersionDocumentRecord as VD
        from conveyor.rag.tables import RagVersionRecord as V

        if parent is None:
            return set()
        with self.store.read() as session:
            return set(
                session.scalars(
                    sa.select(D.doc_id)
                    .join(VD, VD.document == D.id)
                    .join(V, V.id == VD.version_id)
                    .where(V.collection == self.name, V.number == parent)
                )
            )

    def _add_documents(self, documents: list[Document]) -> tuple[list[int], int]:
        """Chunk, embed and store new documents; their rows and how many chunks."""
        import numpy as np

        from conveyor.rag.chunking import chunk_documents
        from conveyor.rag.embed import check_dimension, text_hash
        from conveyor.rag.tables import RagChunkRecord as K
        from conveyor.rag.tables import RagDocumentRecord as D

        config = self.spec.chunking.capped(max(16, self.inner.max_tokens - 2))
        tokenizer = self.inner.tokenizer
        rows: list[int] = []
        embedded = 0
        for batch in _batches(documents, 64):
            chunks = chunk_documents(batch, tokenizer, config)
            vectors = (
                self.embedder.embed([c.text for c in chunks])
                if chunks
                else np.zeros((0, self.inner.dimension), dtype=np.float32)
            )
            if len(chunks):
                check_dimension(int(vectors.shape[1]), self.inner.dimension, what="the encoder's")
            embedded += len(chunks)
            by_doc: dict[str, list[int]] = {}
            for i, c in enumerate(chunks):
                by_doc.setdefault(c.doc_id, []).append(i)
            with self.store.session() as session:
                for doc in batch:
                    meta = _jsonable(doc.metadata)
                    subject = meta.get("subject")
                    record = D(
                        collection=self.name,
                        doc_id=doc.id,
                        content_hash=doc.content_hash,
                        chunker=self.chunker,
                        doc_metadata=meta,
                        subject=None if subject is None else str(subject),
                    )
                    session.add(record)
                    session.flush()
                    rows.append(int(record.id))
                    session.add_all(
                        K(
                            document=record.id,
                            collection=self.name,
                            doc_id=doc.id,
                            ordinal=chunks[i].ordinal,
                            text=chunks[i].text,
                            text_hash=text_hash(chunks[i].text),
                            start=chunks[i].start,
                            end=chunks[i].end,
                            n_tokens=chunks[i].n_tokens,
                            chunk_metadata=_jsonable(chunks[i].metadata),
                            vector=np.asarray(vectors[i], dtype=np.float32).tobytes(),
                        )
                        for i in by_doc.get(doc.id, [])
                    )
        return rows, embedded

    def _link(self, rows: Sequence[int], failures: Sequence[tuple[str, str]]) -> None:
        from conveyor.rag.tables import RagParseFailureRecord as F
        from conveyor.rag.tables import RagVersionDocumentRecord as VD

        with self.store.session() as session:
            session.add_all(VD(version_id=self.version.id, document=r) for r in set(rows))
            session.add_all(
                F(version_id=self.version.id, source=s[:2000], reason=r) for s, r in failures
            )

    def _version_chunks(self) -> tuple[NDArray[np.int64], list[str], NDArray[np.float32]]:
        import numpy as np
        import sqlalchemy as sa

        from conveyor.rag.tables import RagChunkRecord as K
        from conveyor.rag.tables import RagVersionDocumentRecord as VD

        ids: list[int] = []
        texts: list[str] = []
        blobs: list[bytes] = []
        with self.store.read() as session:
            for i, text, blob in session.execute(
                sa.select(K.id, K.text, K.vector)
                .join(VD, VD.document == K.document)
                .where(VD.version_id == self.version.id)
                .order_by(K.id)
            ):
                ids.append(int(i))
                texts.append(text)
                blobs.append(bytes(blob or b""))
        dim = self.inner.dimension
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float32)
        if matrix.size != len(ids) * dim:
            from conveyor.rag.embed import check_dimension

            check_dimension(matrix.size // max(1, len(ids)), dim, what="the stored chunks")
        return np.asarray(ids, dtype=np.int64), texts, matrix.reshape(len(ids), dim)

    def _vector_index(
        self, url: str, ids: NDArray[np.int64], vectors: NDArray[np.float32]
    ) -> tuple[str | None, dict[str, Any]]:
        from conveyor.backends import BackendURL
        from conveyor.rag.embed import check_dimension
        from conveyor.rag.index import INDEX

        parsed = BackendURL.parse(url)
        factory = INDEX.resolve(url)
        index = factory.from_url(
            parsed, dimension=self.inner.dimension, namespace=self.version.namespace
        )
        try:
            check_dimension(self.inner, index.dimension)
            index.add(ids, vectors)
            params = index.params()
            with tempfile.TemporaryDirectory(prefix="conveyor-rag-") as tmp:
                index.save(Path(tmp))
                has_files = any(Path(tmp).iterdir())
                digest = self.collections.put_folder(Path(tmp)) if has_files else None
        finally:
            index.close()
        return digest, _jsonable(params)

    def _bm25(self, ids: NDArray[np.int64], texts: list[str]) -> tuple[str, dict[str, Any]]:
        from conveyor.rag.lexical import BM25Index

        bm25 = BM25Index.build(ids, texts)
        with tempfile.TemporaryDirectory(prefix="conveyor-rag-") as tmp:
            bm25.save(Path(tmp))
            digest = self.collections.put_folder(Path(tmp))
        return digest, _jsonable(bm25.params())

    def _gate(
        self, version: Version, parent: int | None
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The gate's report (None without an eval set) and the tuned fusion weight."""
        if self.spec.gate.eval_set is None:
            return None, None
        from conveyor.rag.api import evaluate_version, tune_version

        tuned = tune_version(self.project, version, embedder=self.inner)
        candidate = evaluate_version(self.project, version, embedder=self.inner, fusion=tuned)
        baseline = None
        if parent is not None:
            base_version = self.collections.version(self.name, parent)
            baseline = evaluate_version(self.project, base_version, embedder=self.inner)
        from conveyor.rag.evaluation import ndcg_gate

        report = ndcg_gate(
            candidate,
            baseline,
            tolerance=self.spec.gate.tolerance,
            subject=f"rag:{self.name}",
            subject_version=str(version.number),
        )
        out = {
            "passed": bool(report.passed),
            "ndcg@10": round(candidate.ndcg_at_10, 6),
            "baseline_ndcg@10": None if baseline is None else round(baseline.ndcg_at_10, 6),
            "baseline_version": parent,
            "tolerance": self.spec.gate.tolerance,
            "eval_set": self.spec.gate.eval_set,
            "candidate": candidate.to_dict(),
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail} for c in report.checks
            ],
        }
        return out, tuned


def _public_url(url: str) -> str:
    from conveyor.backends import BackendURL

    return BackendURL.parse(url).render(hide_password=True)


def _emit(project: Project, version: Version, actor: str | None, counts: Mapping[str, Any]) -> None:
    project.events.record(
        RAG_VERSION_BUILT,
        subject=version.collection,
        subject_version=str(version.number),
        actor=actor,
        payload={
            "version": version.number,
            "status": version.status,
            "parent": version.parent,
            "documents": int(counts.get("documents", 0)),
            "chunks": int(counts.get("chunks", 0)),
            "embedded": int(counts.get("embedded_chunks", 0)),
            "reused": int(counts.get("reused_chunks", 0)),
            "removed": int(counts.get("removed_documents", 0)),
            "parse_failures": int(counts.get("parse_failures", 0)),
            "run_id": version.run_id,
        },
    )


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    """A metadata or parameter mapping as plain JSON (numpy scalars, dates to text)."""
    return dict(json.loads(json.dumps(dict(value), default=_plain)))


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
