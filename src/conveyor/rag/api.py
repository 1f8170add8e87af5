"""RAG from Python, and the query path the HTTP routes share.

::

    import conveyor.rag

    conveyor.rag.build("docs")                                   # a new version, incrementally
    found = conveyor.rag.search("docs", "how do I roll back a model?", k=5)
    found["hits"][0]["text"], found["hits"][0]["citation"]
    packed = conveyor.rag.context("docs", "rollback", budget_tokens=800)

Each function opens the project found from the current directory (or takes ``project=``).

:class:`RagService` is one process's query path: it resolves the version a query names
(``live`` by default; an alias is re-read at most every ``rag.alias_poll_s``, and at once
when it moves in this process), keeps loaded versions in memory (index, BM25, chunks,
metadata for filters) and reloads when the alias moves or documents are deleted, answers
from the retrieval cache (exact query and parameters, for the version served and the
collection's deletion epoch), records a ``rag.query`` event per query, and observes the
per-stage latency in Prometheus when the server gives it a registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from conveyor._daemon import DaemonWorker
from conveyor._gc import long_lived
from conveyor.errors import ConfigError, InvalidInputError
from conveyor.rag.events import RAG_QUERY
from conveyor.rag.timing import ms_since

log = logging.getLogger("conveyor.rag")

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from conveyor.project import Project
    from conveyor.rag.builder import BuildResult
    from conveyor.rag.chunk_table import ChunkTable
    from conveyor.rag.collections import Collections, StoredChunk, Version
    from conveyor.rag.evaluation import EvalResult, LabelledQuery
    from conveyor.rag.lexical import BM25Index
    from conveyor.rag.settings import CollectionSpec
    from conveyor.rag.types import Embedder, VectorIndex

__all__ = [
    "Loaded",
    "RagService",
    "build",
    "context",
    "evaluate_version",
    "search",
    "service_for",
    "shared_embedder",
]

_MAX_LOADED = 3  # versions of one collection kept loaded in a process
_MAX_QUERY_CHARS = 20_000
_PROBE_WAIT_S = 2.0  # how long a readiness probe waits for the first read of the store

T = TypeVar("T")

# -- embedders, shared by the process ---------------------------------------------------------

_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


def shared_embedder(spec: CollectionSpec) -> Embedder:
    """The encoder a collection's spec describes, opened once per process and shared."""
    from conveyor.rag.embed import open_embedder

    key = spec.embedding.model_dump_json()
    with _embedders_lock:
        found = _embedders.get(key)
        if found is None:
            found = _embedders[key] = open_embedder(spec.embedding)
        return found


# -- a loaded version ----------------------------------------------------------------------------


@dataclass
class Loaded:
    """One version in memory: its indexes, chunks and the metadata filters read."""

    version: Version
    epoch: int
    embedder: Embedder
    index: VectorIndex
    bm25: BM25Index
    chunks: ChunkTable
    retriever: Any
    recent: RecentQueries = field(default_factory=lambda: RecentQueries(2048))
    #: Milliseconds a search or context answer takes here (load excluded), by endpoint: a
    #: moving average the HTTP route reads to keep slow ones off its event loop.
    cost_ms: dict[str, float] = field(default_factory=dict)
    _by_value: dict[str, dict[str, NDArray[np.int64]]] = field(default_factory=dict)

    def allowed(self, filters: Mapping[str, Any] | None) -> NDArray[np.int64] | None:
        """The chunk ids a filter lets through (None: no filter). Equality on a value, or
        ``{"in": [values]}``; several fields must all match. An unknown field is an error
        naming it."""
        import numpy as np

        if not filters:
            return None
        if not isinstance(filters, Mapping):
            raise InvalidInputError("filters is an object of field: value", field="filters")
        result: NDArray[np.int64] | None = None
        for name, wanted in filters.items():
            if name not in self.chunks.fields:
                known = ", ".join(sorted(self.chunks.fields))
                raise InvalidInputError(
                    f"unknown metadata field {name!r} in filters (this collection's chunks "
                    f"have: {known})",
                    field=f"filters.{name}",
                )
            if isinstance(wanted, Mapping):
                if set(wanted) != {"in"} or not isinstance(wanted["in"], list):
                    raise InvalidInputError(
                        f"filter {name!r}: a value, or {{'in': [values]}}", field=f"filters.{name}"
                    )
                values = wanted["in"]
            else:
                values = [wanted]
            table = self._values(name)
            parts = [table.get(_key(v)) for v in values]
            found = [p for p in parts if p is not None]
            ids = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
            result = ids if result is None else np.intersect1d(result, ids)
        return result

    def _values(self, name: str) -> dict[str, NDArray[np.int64]]:
        import numpy as np

        table = self._by_value.get(name)
        if table is None:
            lists: dict[str, list[int]] = {}
            for cid, value in self.chunks.field_values(name):
                lists.setdefault(_key(value), []).append(cid)
            table = {k: np.asarray(v, dtype=np.int64) for k, v in lists.items()}
            self._by_value[name] = table
        return table

    def close(self) -> None:
        self.index.close()


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _params_key(
    endpoint: str, k: int, filters: Mapping[str, Any] | None, budget_tokens: int | None
) -> str:
    return json.dumps([endpoint, k, filters or {}, budget_tokens], sort_keys=True, default=str)


class RecentQueries:
    """The vectors of recent queries of one loaded version and their cache keys, by
    parameters (a ring per parameter set): the near-duplicate cache's lookup."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rings: dict[str, tuple[list[Any], list[str]]] = {}
        self._lock = threading.Lock()

    def add(self, params: str, vector: NDArray[np.float32], key: str) -> None:
        with self._lock:
            vectors, keys = self._rings.setdefault(params, ([], []))
            vectors.append(vector)
            keys.append(key)
            if len(keys) > self.capacity:
                del vectors[0], keys[0]

    def nearest(self, params: str, vector: NDArray[np.float32]) -> tuple[str, float] | None:
        """The key of the most similar query with these parameters, and the cosine."""
        import numpy as np

        with self._lock:
            ring = self._rings.get(params)
            if not ring or not ring[1]:
                return None
            matrix = np.vstack(ring[0])
            keys = list(ring[1])
        sims = matrix @ np.asarray(vector, dtype=np.float32)
        best = int(np.argmax(sims))
        return keys[best], float(sims[best])


# -- what the store says, read off the caller's thread -----------------------------------------


class _Polled(Generic[T]):
    """A value read from the store and trusted for ``ttl_s`` seconds: once older, it is read
    again on ``worker``'s long-lived thread (one read at a time) and the known value
    returned meanwhile;
    a read that fails keeps it, and is tried again after another ``ttl_s``.

    The first :meth:`get` reads on the caller's thread (``wait=None``: its errors are the
    caller's), or starts the background read and waits at most ``wait`` seconds for it
    (None when it has not answered by then)."""

    def __init__(
        self,
        read: Callable[[], T],
        ttl_s: float,
        *,
        name: str,
        worker: DaemonWorker,
    ) -> None:
        self._read = read
        self.ttl_s = ttl_s
        self.name = name
        self._lock = threading.Lock()
        self._value: T | None = None
        self._read_at: float | None = None  # None: never read
        self._reading: threading.Event | None = None  # set when the background read ends
        # re-reads run on a long-lived thread (a service's values share one): starting a
        # thread per read made the query that found the value stale wait for that thread's
        # first turn at the GIL
        self._worker = worker

    def get(self, wait: float | None = None) -> T | None:
        with self._lock:
            if self._read_at is not None:
                if time.monotonic() - self._read_at >= self.ttl_s:
                    self._start()
                return self._value
            done = None if wait is None else self._start()
        if done is None:
            started = time.monotonic()
            value = self._read()
            with self._lock:
                self._value, self._read_at = value, started
            return value
        done.wait(wait)
        with self._lock:
            return self._value

    def known(self) -> T | None:
        """The value last read (None before the first read), without reading anything."""
        with self._lock:
            return self._value if self._read_at is not None else None

    def stale(self) -> None:
        """Read again on the next :meth:`get` (in the background once a value is known)."""
        with self._lock:
            if self._read_at is not None:
                self._read_at = -float("inf")

    def _start(self) -> threading.Event:
        if self._reading is None:
            self._reading = threading.Event()
            self._worker.submit(self._background)
        return self._reading

    def _background(self) -> None:
        started = time.monotonic()
        try:
            value = self._read()
        except Exception:
            log.warning(
                "rag: %s: reading the store failed; kept what was known", self.name, exc_info=True
            )
            with self._lock:  # try again after another interval, not on every call
                if self._read_at is not None:
                    self._read_at = time.monotonic()
        else:
            with self._lock:
                self._value, self._read_at = value, started
        finally:
            with self._lock:
                done, self._reading = self._reading, None
            if done is not None:
                done.set()


# -- the query path ----------------------------------------------------------------------------


class RagService:
    """One process's retrieval over a project's collections (see the module)."""

    def __init__(self, project: Project, *, metrics: Any = None) -> None:
        from conveyor.rag.collections import Collections, on_change
        from conveyor.rag.settings import rag_of

        self.project = project
        self.collections: Collections = project.service("rag", Collections)
        self.spec = rag_of(project.spec)
        self.metrics = metrics
        self._lock = threading.RLock()
        self._resolved: dict[tuple[str, str], _Polled[tuple[int, int]]] = {}
        self._poller = DaemonWorker("conveyor-rag-poll")
        self._live = _Polled(
            self.collections.any_alias,
            self.spec.alias_poll_s,
            name="conveyor-rag-ready",
            worker=self._poller,
        )
        self._loaded: dict[tuple[str, int], Loaded] = {}
        self._load_locks: dict[tuple[str, int], threading.Lock] = {}
        on_change(self)

    # -- resolution and loading ---------------------------------------------------------------

    def changed(self, collection: str) -> None:
        """An alias of ``collection`` moved or documents were deleted (in this process)."""
        with self._lock:
            for key in [k for k in self._resolved if k[0] == collection]:
                del self._resolved[key]
        self._live.stale()

    def resolve(self, name: str, ref: int | str | None) -> tuple[int, int]:
        """(version number, deletion epoch) that ``ref`` names now.

        Read from the store the first time; after that the known answer is returned at once
        and, once it is ``rag.alias_poll_s`` old, read again in a background thread: a query
        never waits on the store for an alias (it did, once a second, which was the p99 of a
        busy server), and while the store is unreachable the last known version is served.
        A move or deletion made in this process clears the answer (:meth:`changed`)."""
        key = _ref_key(name, ref)
        with self._lock:
            polled = self._resolved.get(key)
        if polled is None:

            def read() -> tuple[int, int]:
                return self.collections.number_of(name, ref), self.collections.epoch(name)

            polled = _Polled(
                read, self.spec.alias_poll_s, name="conveyor-rag-alias", worker=self._poller
            )
            found = polled.get()  # on this thread: a reference that names nothing is kept
            with self._lock:  # only once it resolved (a caller chooses what it asks for)
                self._resolved.setdefault(key, polled)
        else:
            found = polled.get()
        assert found is not None  # a known value, or the first read's own answer
        return found

    def serves(self) -> bool:
        """Readiness: whether a collection has a version to answer from (an alias), as last
        read from the store; a probe never reads it itself (at most once per
        ``rag.alias_poll_s``, in the background), so it costs no SQL and a hung store
        cannot hang it (the first probe waits a moment for the first read)."""
        return bool(self._live.get(wait=_PROBE_WAIT_S))

    def loaded(self, name: str, ref: int | str | None = None) -> Loaded:
        """The version ``ref`` names, loaded (once per process, again after a deletion)."""
        self.collections.declared(name)
        number, epoch = self.resolve(name, ref)
        key = (name, number)
        with self._lock:
            found = self._loaded.get(key)
            if found is not None and found.epoch == epoch:
                return found
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                found = self._loaded.get(key)
                if found is not None and found.epoch == epoch:
                    return found
            with long_lived():  # its chunks stay: out of the collector's walks (conveyor._gc)
                fresh = load_version(self.project, self.collections.version(name, number), epoch)
            with self._lock:
                old = self._loaded.pop(key, None)
                self._loaded[key] = fresh
                mine = [k for k in self._loaded if k[0] == name]
                for stale in mine[:-_MAX_LOADED]:
                    self._loaded.pop(stale).close()
            if old is not None:
                old.close()
            return fresh

    def answers_in_memory(self, name: str, ref: object = None, endpoint: str = "search") -> bool:
        """Whether a query on ``name`` (``ref``: a version or alias, None for ``live``)
        would be answered quickly and without I/O: the name already resolved (later
        re-reads are in the background), its version loaded, its ``endpoint`` answers
        measured at most ``rag.inline_max_ms`` on average, and the retrieval cache off or in
        this process's memory. The HTTP route answers such a query on the event loop when
        it is the only request in flight, which saves the hop to a thread and back
        (docs/rag/retrieval.md); anything that may wait on the store, Redis or a load, or
        that has not been measured cheap, goes to a thread."""
        if self.spec.cache.enabled and not getattr(self.project.cache, "local", False):
            return False
        with self._lock:
            polled = self._resolved.get(_ref_key(name, ref))
            known = polled.known() if polled is not None else None
            if known is None:
                return False
            number, epoch = known
            found = self._loaded.get((name, number))
        if found is None or found.epoch != epoch:
            return False
        cost = found.cost_ms.get(endpoint)
        return cost is not None and cost <= self.spec.inline_max_ms

    def close(self) -> None:
        self._poller.close()
        with self._lock:
            for loaded in self._loaded.values():
                loaded.close()
            self._loaded.clear()

    # -- queries ------------------------------------------------------------------------------

    def search(
        self,
        name: str,
        query: str,
        *,
        k: int | None = None,
        filters: Mapping[str, Any] | None = None,
        version: int | str | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """The ``k`` best chunks for ``query`` with their citations and per-stage scores."""
        return self._answer(
            "search", name, query, k, filters, version, None, actor=actor, request_id=request_id
        )

    def context(
        self,
        name: str,
        query: str,
        *,
        k: int | None = None,
        filters: Mapping[str, Any] | None = None,
        version: int | str | None = None,
        budget_tokens: int | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """The prompt's context for ``query``: the best chunks packed within
        ``budget_tokens``, with citations."""
        return self._answer(
            "context",
            name,
            query,
            k,
            filters,
            version,
            budget_tokens,
            actor=actor,
            request_id=request_id,
        )

    def _answer(
        self,
        endpoint: str,
        name: str,
        query: str,
        k: int | None,
        filters: Mapping[str, Any] | None,
        version: int | str | None,
        budget_tokens: int | None,
        *,
        actor: str | None,
        request_id: str | None,
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        query, k = self._check(query, k, budget_tokens)
        loaded = self.loaded(name, version)
        latency: dict[str, float] = {"load": ms_since(t0)}
        cache_key = self._cache_key(endpoint, loaded, query, k, filters, budget_tokens)
        cached = self._cache_get(cache_key)
        near: tuple[str, NDArray[np.float32]] | None = None
        if cached is None and cache_key is not None and self.spec.cache.near_duplicate:
            near = self._near(loaded, endpoint, query, k, filters, budget_tokens)
            if near is not None and near[0] != cache_key:
                cached = self._cache_get(near[0])
                if cached is not None:
                    cached = {**cached, "near_duplicate": True}
        if cached is not None:
            latency["total"] = ms_since(t0)
            answer = {**cached, "cache_hit": True, "latency_ms": latency}
            self._observe(name, endpoint, loaded, query, k, answer, latency)
            return answer
        allowed = loaded.allowed(filters)
        if endpoint == "search":
            body, stages, warnings = run_search(loaded, query, k, allowed)
        else:
            body, stages, warnings = run_context(loaded, query, k, allowed, budget_tokens)
        latency.update(stages)
        _measure(loaded, endpoint, ms_since(t0) - latency["load"])
        answer = {
            "collection": name,
            "version": loaded.version.number,
            **body,
            "warnings": warnings,
        }
        self._cache_put(cache_key, answer)
        if near is not None and cache_key is not None:
            loaded.recent.add(_params_key(endpoint, k, filters, budget_tokens), near[1], cache_key)
        latency["total"] = ms_since(t0)
        answer = {**answer, "cache_hit": False, "latency_ms": latency}
        self._observe(name, endpoint, loaded, query, k, answer, latency)
        return answer

    def _check(self, query: Any, k: Any, budget_tokens: Any) -> tuple[str, int]:
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query must be a non-empty string", field="query")
        if len(query) > _MAX_QUERY_CHARS:
            raise InvalidInputError(
                f"query is {len(query)} characters; at most {_MAX_QUERY_CHARS}", field="query"
            )
        if k is None:
            k = 10
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.spec.max_k:
            raise InvalidInputError(
                f"k must be an integer from 1 to {self.spec.max_k}, got {k!r}", field="k"
            )
        if budget_tokens is not None and (
            isinstance(budget_tokens, bool)
            or not isinstance(budget_tokens, int)
            or budget_tokens < 1
        ):
            raise InvalidInputError(
                f"budget_tokens must be a positive integer, got {budget_tokens!r}",
                field="budget_tokens",
            )
        return query, k

    # -- the retrieval cache --------------------------------------------------------------------

    def _near(
        self,
        loaded: Loaded,
        endpoint: str,
        query: str,
        k: int,
        filters: Mapping[str, Any] | None,
        budget_tokens: int | None,
    ) -> tuple[str, NDArray[np.float32]] | None:
        """The cache key of the most similar earlier query (or "" when none is similar
        enough) and this query's vector; None for a query the encoder truncates."""
        embedder = loaded.embedder
        if embedder.tokenizer.count(query) > embedder.max_tokens - 2:
            return None
        vector = embedder.embed([query])[0]
        threshold = float(self.spec.cache.near_duplicate or 1.0)
        found = loaded.recent.nearest(_params_key(endpoint, k, filters, budget_tokens), vector)
        key = found[0] if found is not None and found[1] >= threshold else ""
        return key, vector

    def _cache_key(
        self,
        endpoint: str,
        loaded: Loaded,
        query: str,
        k: int,
        filters: Mapping[str, Any] | None,
        budget_tokens: int | None,
    ) -> str | None:
        if not self.spec.cache.enabled:
            return None
        body = json.dumps(
            [
                endpoint,
                loaded.version.collection,
                loaded.version.number,
                loaded.epoch,
                query,
                k,
                filters or {},
                budget_tokens,
            ],
            sort_keys=True,
            default=str,
        )
        return "rag:q:" + hashlib.sha256(body.encode()).hexdigest()

    def _cache_get(self, key: str | None) -> dict[str, Any] | None:
        if key is None:
            return None
        try:
            raw = self.project.cache.get(key)
        except Exception:  # a cache that does not answer never fails a query
            return None
        if raw is None:
            return None
        found: dict[str, Any] = json.loads(raw)
        return found

    def _cache_put(self, key: str | None, answer: Mapping[str, Any]) -> None:
        if key is None:
            return
        try:
            self.project.cache.set(key, json.dumps(answer).encode(), ttl=self.spec.cache.ttl_s)
        except Exception:  # best effort
            return

    # -- events and metrics ---------------------------------------------------------------------

    def _observe(
        self,
        name: str,
        endpoint: str,
        loaded: Loaded,
        query: str,
        k: int,
        answer: Mapping[str, Any],
        latency: Mapping[str, float],
    ) -> None:
        hits = answer.get("hits") or answer.get("chunks") or []
        with contextlib.suppress(Exception):  # telemetry never fails a query
            self.project.events.record(
                RAG_QUERY,
                subject=name,
                subject_version=str(loaded.version.number),
                payload={
                    "version": loaded.version.number,
                    "query_digest": hashlib.sha256(query.encode()).hexdigest(),
                    "endpoint": endpoint,
                    "k": k,
                    "chunk_ids": [int(h["chunk_id"]) for h in hits],
                    "scores": [round(float(h.get("score", 0.0)), 6) for h in hits],
                    "latency_ms": dict(latency),
                    "cache_hit": bool(answer.get("cache_hit")),
                    "truncated": bool(answer.get("warnings")),
                },
            )
        if self.metrics is not None:
            self.metrics.observe(name, endpoint, latency, bool(answer.get("cache_hit")))


def _ref_key(name: str, ref: object) -> tuple[str, str]:
    """How a collection and the version or alias a query names are kept resolved."""
    return name, "live" if ref is None else str(ref)


def _measure(loaded: Loaded, endpoint: str, ms: float) -> None:
    """Fold one answer's time into ``loaded.cost_ms`` (an exponential moving average: a
    version that turns slow, a reranker switched on, is seen within a few queries)."""
    before = loaded.cost_ms.get(endpoint)
    loaded.cost_ms[endpoint] = ms if before is None else before + 0.2 * (ms - before)


# -- loading, retrieval, packing (the retriever's seam) -----------------------------------------


def load_version(
    project: Project, version: Version, epoch: int, *, building: bool = False
) -> Loaded:
    """Open a version's indexes and chunks; refused when the collection's encoder is not the
    one the version was built with. ``building``: the build's own gate opens its version
    before it is ready."""
    from conveyor.rag.collections import Collections
    from conveyor.rag.embed import check_dimension
    from conveyor.rag.lexical import BM25Index

    collections = project.service("rag", Collections)
    spec = collections.declared(version.collection)
    if version.status not in ("ready", "refused") and not (
        building and version.status == "building"
    ):
        raise InvalidInputError(
            f"version {version.ref} is {version.status}: it has no index to serve",
            field="version",
        )
    embedder = shared_embedder(spec)
    params = version.params
    check_dimension(embedder, int(params["dimension"]), what=f"the index of {version.ref}")
    if params.get("model") != embedder.model:
        raise ConfigError(
            f"{version.ref} was built with the encoder {params.get('model')!r}; the collection "
            f"now configures {embedder.model!r}: rebuild it, or configure the model it was "
            "built with",
            collection=version.collection,
        )
    folder = collections.folder(version.index_digest) if version.index_digest else None
    index = collections.open_index(version, folder)
    if version.bm25_digest is None:
        raise ConfigError(f"{version.ref} has no BM25 index", collection=version.collection)
    bm25 = BM25Index.load(collections.folder(version.bm25_digest))
    chunks = collections.version_chunks(version.id)
    if collections.spec.cache.near_duplicate:
        # the near-duplicate check embeds the query first; the retriever then finds it here
        from conveyor.rag.embed import CachedEmbedder, MemoryEmbeddingStore

        embedder = CachedEmbedder(embedder, MemoryEmbeddingStore(max_entries=4096))
    retriever = make_retriever(embedder, index, bm25, chunks, spec, version, root=str(project.root))
    loaded = Loaded(version, epoch, embedder, index, bm25, chunks, retriever)
    loaded.recent = RecentQueries(collections.spec.cache.near_duplicate_entries)
    return loaded


def make_retriever(
    embedder: Embedder,
    index: VectorIndex,
    bm25: BM25Index,
    chunks: Mapping[int, StoredChunk],
    spec: CollectionSpec,
    version: Version | None,
    fusion: Mapping[str, Any] | None = None,
    root: str | None = None,
) -> Any:
    """The retrieve part's :class:`~conveyor.rag.retriever.Retriever` over a version, with the
    collection's retrieval settings and the version's tuned fusion weight."""
    from conveyor.rag.retriever import RetrievalConfig, Retriever

    settings = dict(spec.retrieval)
    tuned = fusion if fusion is not None else (version.params.get("fusion") if version else None)
    if tuned and "weight" not in settings and isinstance(tuned.get("best_weight"), float | int):
        settings.setdefault("weight", float(tuned["best_weight"]))
    config = RetrievalConfig.model_validate(settings)

    def lookup(ids: Sequence[int]) -> dict[int, Any]:
        # one lookup each (a deleted chunk is simply absent)
        return {i: c.as_chunk() for i in ids if (c := chunks.get(i)) is not None}

    reranker = _reranker(spec, root) if config.rerank else None
    return Retriever(embedder, index, bm25, lookup, config, reranker=reranker)


_rerankers: dict[str, Any] = {}


def _reranker(spec: CollectionSpec, root: str | None) -> Any:
    """The collection's reranker (opened once per process): a cross-encoder folder, or a
    fitted learned-fusion reranker's JSON file."""
    from pathlib import Path

    if spec.reranker is None:
        raise ConfigError(
            "retrieval.rerank is on but the collection names no reranker: set its reranker "
            "to a cross-encoder folder or a learned-fusion reranker's JSON file",
            field="reranker",
        )
    with _embedders_lock:
        found = _rerankers.get(spec.reranker)
        if found is None:
            from conveyor.rag.rerank import CrossEncoderReranker, LearnedFusionReranker

            path = Path(spec.reranker)
            if not path.is_absolute() and root is not None:
                path = Path(root) / path
            found = (
                CrossEncoderReranker(path) if path.is_dir() else LearnedFusionReranker.load(path)
            )
            _rerankers[spec.reranker] = found
        return found


def run_search(
    loaded: Loaded, query: str, k: int, allowed: NDArray[np.int64] | None
) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """Hits as the API answers them, the latency of each stage (ms), and warnings."""
    result = loaded.retriever.search(query, k, allowed=allowed)
    hits = [_hit(h) for h in result.hits]
    return {"hits": hits}, dict(result.latency_ms), list(result.warnings)


def run_context(
    loaded: Loaded,
    query: str,
    k: int,
    allowed: NDArray[np.int64] | None,
    budget_tokens: int | None,
) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """The packed context (text, citations, tokens), the hits it came from, the latency of
    each stage (ms), and warnings."""
    result = loaded.retriever.context(query, budget_tokens, k=k, allowed=allowed)
    packed = result.context.to_dict()
    packed.pop("warnings", None)
    body = {"context": packed, "hits": [_hit(h) for h in result.hits]}
    return body, dict(result.latency_ms), list(dict.fromkeys(result.warnings))


def _hit(hit: Any) -> dict[str, Any]:
    meta = dict(hit.metadata)
    return {
        "chunk_id": int(hit.chunk_id),
        "doc_id": hit.doc_id,
        "text": hit.text,
        "score": round(float(hit.score), 6),
        "scores": {s: round(float(v), 6) for s, v in hit.scores.items()},
        "citation": {
            "doc_id": hit.doc_id,
            "source": meta.get("source", hit.doc_id),
            "start": int(hit.start),
            "end": int(hit.end),
            "section": meta.get("section"),
            "page": meta.get("page"),
        },
        "metadata": meta,
    }


# -- evaluation (the build's gate and conveyor rag eval) ----------------------------------------


def gate_queries(project: Project, spec: CollectionSpec) -> tuple[list[LabelledQuery], str]:
    """The labelled queries of a collection's gate, and whether their ids are documents
    (``doc``) or chunks."""
    from pathlib import Path

    from conveyor.rag.evaluation import load_queries

    path = spec.gate.eval_set
    if path is None:
        raise InvalidInputError("the collection has no gate.eval_set", field="gate.eval_set")
    file = Path(path)
    file = file if file.is_absolute() else Path(project.root) / file
    return load_queries(file), spec.gate.by


def evaluate_version(
    project: Project,
    version: Version,
    *,
    embedder: Embedder | None = None,
    fusion: Mapping[str, Any] | None = None,
    queries: Sequence[LabelledQuery] | None = None,
    by: str | None = None,
    k: int = 10,
) -> EvalResult:
    """nDCG@10, recall@k, MRR and per-stage latency of a version on the gate's set (or
    ``queries``)."""
    from conveyor.rag.collections import Collections
    from conveyor.rag.evaluation import evaluate, hits_run

    collections = project.service("rag", Collections)
    spec = collections.declared(version.collection)
    if queries is None:
        queries, by = gate_queries(project, spec)
    loaded = _open_for_eval(project, version, embedder, fusion)
    try:

        def run(query: str) -> tuple[Sequence[Any], Mapping[str, float]]:
            result = loaded.retriever.search(query, max(k, 10))
            return result.hits, result.latency_ms

        return evaluate(hits_run(run, by=by or "doc"), queries, k=k)
    finally:
        loaded.close()


def evaluate_docstrings(project: Project, name: str, *, size: int = 300, k: int = 10) -> EvalResult:
    """A collection's settings (encoder, retrieval) on the built-in known-item set: the
    docstrings of numpy, scipy and scikit-learn's public API indexed in memory (exact
    search), each summary line a query whose one relevant chunk is its docstring body."""
    import numpy as np

    from conveyor.rag.collections import Collections, StoredChunk
    from conveyor.rag.evaluation import evaluate, hits_run
    from conveyor.rag.index.exact import ExactIndex
    from conveyor.rag.known_items import docstring_set
    from conveyor.rag.lexical import BM25Index

    spec = project.service("rag", Collections).declared(name)
    embedder = shared_embedder(spec)
    items = docstring_set(size)
    ids = np.asarray(items.ids, dtype=np.int64)
    texts = items.texts
    index = ExactIndex(embedder.dimension, namespace="docstrings")
    index.add(ids, embedder.embed(texts))
    bm25 = BM25Index.build(ids, texts)
    chunks = {
        int(item.id): StoredChunk(int(item.id), item.name, 0, item.document, 0, 0, 0, {})
        for item in items.items
    }
    retriever = make_retriever(embedder, index, bm25, chunks, spec, None, root=str(project.root))

    def run(query: str) -> tuple[Sequence[Any], Mapping[str, float]]:
        result = retriever.search(query, max(k, 10))
        return result.hits, result.latency_ms

    try:
        return evaluate(hits_run(run, by="chunk"), items.queries(), k=k)
    finally:
        index.close()


def tune_version(
    project: Project, version: Version, *, embedder: Embedder | None = None
) -> dict[str, Any] | None:
    """The convex-fusion weight that maximizes nDCG@10 on the gate's set (None without one)."""
    from conveyor.rag.collections import Collections
    from conveyor.rag.evaluation import ndcg_at_k
    from conveyor.rag.fusion import tune_weight

    collections = project.service("rag", Collections)
    spec = collections.declared(version.collection)
    if spec.gate.eval_set is None:
        return None
    queries, by = gate_queries(project, spec)
    loaded = _open_for_eval(project, version, embedder, None)
    try:
        depth = 50
        candidates = []
        for q in queries:
            vector = loaded.embedder.embed([q.query])
            dense = loaded.index.search(vector, depth)
            bm = loaded.bm25.search(q.query, depth)
            candidates.append(((dense[0][0], dense[1][0]), bm))
        doc_of = dict(loaded.chunks.field_values("doc_id"))

        def metric(ranked: Sequence[int], relevant: Sequence[Any]) -> float:
            names = [doc_of.get(int(i), "") for i in ranked] if by == "doc" else list(ranked)
            return ndcg_at_k(names, relevant, 10)

        relevant: list[Any] = [list(q.relevant) for q in queries]
        curve = tune_weight(candidates, relevant, metric=metric)
        return curve.to_dict()
    finally:
        loaded.close()


def _open_for_eval(
    project: Project,
    version: Version,
    embedder: Embedder | None,
    fusion: Mapping[str, Any] | None,
) -> Loaded:
    loaded = load_version(project, version, -1, building=True)
    if embedder is not None or fusion is not None:
        from conveyor.rag.collections import Collections

        spec = project.service("rag", Collections).declared(version.collection)
        loaded.embedder = embedder or loaded.embedder
        loaded.retriever = make_retriever(
            loaded.embedder,
            loaded.index,
            loaded.bm25,
            loaded.chunks,
            spec,
            version,
            fusion,
            root=str(project.root),
        )
    return loaded


# -- module-level entry points ----------------------------------------------------------------

_services: dict[int, RagService] = {}
_services_lock = threading.Lock()


def service_for(project: Project) -> RagService:
    """The query path of ``project`` in this process (one per project object)."""
    with _services_lock:
        found = _services.get(id(project))
        if found is None or found.project is not project:
            found = _services[id(project)] = RagService(project)
        return found


def _with_project(project: Project | None) -> tuple[Project, bool]:
    if project is not None:
        return project, False
    from conveyor.project import Project as P

    return P.open(), True


def search(
    collection: str,
    query: str,
    *,
    k: int = 10,
    filters: Mapping[str, Any] | None = None,
    version: int | str | None = None,
    project: Project | None = None,
) -> dict[str, Any]:
    """The ``k`` best chunks of ``collection`` for ``query`` (see :meth:`RagService.search`)."""
    proj, own = _with_project(project)
    try:
        return service_for(proj).search(collection, query, k=k, filters=filters, version=version)
    finally:
        if own:
            _forget(proj)
            proj.close()


def context(
    collection: str,
    query: str,
    *,
    k: int = 10,
    budget_tokens: int | None = None,
    filters: Mapping[str, Any] | None = None,
    version: int | str | None = None,
    project: Project | None = None,
) -> dict[str, Any]:
    """The packed context for ``query`` (see :meth:`RagService.context`)."""
    proj, own = _with_project(project)
    try:
        return service_for(proj).context(
            collection,
            query,
            k=k,
            filters=filters,
            version=version,
            budget_tokens=budget_tokens,
        )
    finally:
        if own:
            _forget(proj)
            proj.close()


def build(
    collection: str,
    *,
    force: bool = False,
    reason: str | None = None,
    actor: str | None = None,
    project: Project | None = None,
) -> BuildResult:
    """Build a new version of ``collection`` (see :mod:`conveyor.rag.builder`)."""
    from conveyor.rag.builder import build_collection

    proj, own = _with_project(project)
    try:
        return build_collection(proj, collection, actor=actor, force=force, reason=reason)
    finally:
        if own:
            proj.close()


def _forget(project: Project) -> None:
    with _services_lock:
        found = _services.pop(id(project), None)
    if found is not None:
        found.close()


def _collections(project: Project) -> Collections:
    from conveyor.rag.collections import Collections

    return project.service("rag", Collections)
