"""``ivf://`` and ``ivfpq://``: faiss inverted-file indexes for large collections.

``ivf://?nlist=1024&nprobe=16`` is ``IndexIVFFlat`` (full vectors in the lists: exact scores
of the candidates); ``ivfpq://?nlist=1024&m=48&nbits=8&nprobe=16&rerank=0`` is
``IndexIVFPQ``: each vector stored as ``m`` codes of ``nbits`` (48 bytes at m=48, nbits=8,
against 1,536 for float32 at 384 dimensions), scores approximate.

Choices, and why:

- **Trained on the added vectors, exact until there are enough.** k-means needs about 39
  points per centroid (faiss's own rule; fewer gives poor centroids and a warning), so the
  index keeps the vectors in an exact store until ``39 * nlist`` have been added (for PQ, also
  ``39 * 2**nbits`` for the codebooks), then trains on all of them and moves them into the
  inverted lists. A small collection with an ``ivf://`` URL is therefore searched exactly,
  never refused; ``params()["trained"]`` says which it is. Vectors added after training are
  encoded with the trained centroids (a new collection version rebuilds and retrains).
- **Re-ranking is optional** (``rerank=R``, ``ivfpq://`` only): the ``R * k`` best PQ
  candidates are re-scored exactly from a float32 copy of the vectors. It buys back most of
  PQ's recall loss but keeps 4 bytes per dimension in memory again, so it is off by default:
  the point of PQ is the memory. ``params()`` reports bytes per vector either way.
- **Filters** (``allowed``) use faiss's own selector (``IDSelectorBatch``) inside the search,
  so only allowed ids are ever scored; a selective filter (at most ``max(4096, n / 100)`` ids)
  scans every list (``nprobe = nlist``), which makes it exact over the subset for ``ivf://``
  and exhaustive over the subset's codes for ``ivfpq://`` (exact when re-ranking).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from conveyor.backends import BackendURL, Closeable
from conveyor.errors import ClosedError, InvalidInputError
from conveyor.rag.index._faiss import faiss_module
from conveyor.rag.index._inputs import (
    as_allowed,
    as_ids,
    as_queries,
    as_vectors,
    check_batch,
    check_dimension,
    check_k,
    check_namespace,
    check_url,
    int_param,
    read_meta,
    write_meta,
)
from conveyor.rag.index._topk import empty_result, exact_top_k
from conveyor.rag.index.exact import ExactIndex

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["IvfIndex"]

_FAISS_FILE = "ivf.faiss"
_STORE_DIR = "vectors"
_POINTS_PER_CENTROID = 39
#: Filters with at most this many ids (or 1% of the index) scan every list.
SELECTIVE = 4096


class IvfIndex(Closeable):
    """An IVF-Flat (``ivf://``) or IVF-PQ (``ivfpq://``) index; see the module's notes."""

    def __init__(
        self,
        dimension: int,
        namespace: str = "default",
        *,
        pq: bool = False,
        nlist: int = 1024,
        nprobe: int = 16,
        m: int = 48,
        nbits: int = 8,
        rerank: int = 0,
    ) -> None:
        self._dimension = check_dimension(dimension)
        self.namespace = check_namespace(namespace)
        self.kind = "ivfpq" if pq else "ivf"
        self.pq, self.nlist, self.nprobe = pq, nlist, nprobe
        self.m, self.nbits, self.rerank = m, nbits, rerank
        if pq and dimension % m:
            raise InvalidInputError(
                f"ivfpq: m={m} must divide the dimension {dimension} (each of the m "
                "sub-quantizers encodes dimension/m components)",
                field="m",
            )
        if pq and not 1 <= nbits <= 16:
            raise InvalidInputError(f"ivfpq: nbits must be 1..16, got {nbits}", field="nbits")
        if nprobe > nlist:
            raise InvalidInputError(
                f"{self.kind}: nprobe={nprobe} is more than nlist={nlist}", field="nprobe"
            )
        if rerank and not pq:
            raise InvalidInputError(
                "ivf: rerank applies to ivfpq:// only (IVF-Flat scores are exact)",
                field="rerank",
            )
        # Exact store: every vector before training; after it, only when re-ranking.
        self._store: ExactIndex | None = ExactIndex(dimension, self.namespace)
        self._faiss: Any = None
        #: A filter with at most this many ids (or 1% of the index) scans every list.
        self.selective = SELECTIVE
        self._closed = False

    @property
    def train_size(self) -> int:
        """Vectors needed before the index trains (below it, search is exact)."""
        need = _POINTS_PER_CENTROID * self.nlist
        if self.pq:
            need = max(need, _POINTS_PER_CENTROID * (1 << self.nbits))
        return need

    # -- the seam's constructors ----------------------------------------------------------

    @classmethod
    def _options(cls, url: BackendURL) -> dict[str, Any]:
        pq = url.scheme == "ivfpq"
        names = ("nlist", "nprobe", "m", "nbits", "rerank") if pq else ("nlist", "nprobe")
        check_url(url, names, f"{url.scheme} index")
        options: dict[str, Any] = {
            "pq": pq,
            "nlist": int_param(url, "nlist", 1024),
            "nprobe": int_param(url, "nprobe", 16),
        }
        if pq:
            options |= {
                "m": int_param(url, "m", 48),
                "nbits": int_param(url, "nbits", 8),
                "rerank": int_param(url, "rerank", 0, minimum=0),
            }
        return options

    @classmethod
    def from_url(cls, url: BackendURL, *, dimension: int, namespace: str) -> Self:
        return cls(dimension, namespace, **cls._options(url))

    @classmethod
    def load(
        cls, url: BackendURL, directory: Path | None, *, dimension: int, namespace: str
    ) -> Self:
        """The saved index; ``nprobe`` (a search setting) may be changed by the URL."""
        faiss = faiss_module()

        options = cls._options(url)
        meta = read_meta(directory, url.scheme, dimension)
        assert directory is not None
        directory = Path(directory)
        build = {k: meta[k] for k in ("nlist", "m", "nbits", "rerank") if k in meta}
        nprobe = options["nprobe"] if "nprobe" in url.query else meta["nprobe"]
        index = cls(dimension, namespace, pq=options["pq"], nprobe=nprobe, **build)
        if meta["trained"]:
            index._faiss = faiss.read_index(str(directory / _FAISS_FILE))
            index._store = None
        if (directory / _STORE_DIR).is_dir():
            store = ExactIndex.load(
                BackendURL.parse("exact://"),
                directory / _STORE_DIR,
                dimension=dimension,
                namespace=index.namespace,
            )
            index._store = store
        return index

    # -- the protocol ---------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def trained(self) -> bool:
        return self._faiss is not None

    def __len__(self) -> int:
        if self._faiss is not None:
            return int(self._faiss.ntotal)
        return len(self._store) if self._store is not None else 0

    def set_nprobe(self, nprobe: int) -> None:
        """Change the lists searched per query (a search setting, not a build one)."""
        if not 1 <= nprobe <= self.nlist:
            raise InvalidInputError(f"nprobe must be 1..{self.nlist}, got {nprobe}")
        self.nprobe = nprobe

    def set_rerank(self, rerank: int) -> None:
        """Change how many candidates per result are re-scored (0: none). Needs the float32
        copy, kept only by an index built with ``rerank`` > 0."""
        if rerank and self._faiss is not None and self._store is None:
            raise InvalidInputError(
                "this ivfpq index keeps no float32 copy to re-rank from: build it with rerank > 0",
                field="rerank",
            )
        self.rerank = rerank

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        """Add rows (an id already present is replaced); trains once enough are present."""
        self._check_open()
        ids = as_ids(ids)
        vectors = as_vectors(vectors, self._dimension)
        check_batch(ids, vectors)
        if self._faiss is None:
            assert self._store is not None
            self._store.add(ids, vectors)
            if len(self._store) >= self.train_size:
                self._train()
            return
        self._remove_from_faiss(ids)
        self._faiss.add_with_ids(vectors, ids)
        if self._store is not None:
            self._store.add(ids, vectors)

    def remove(self, ids: NDArray[np.int64]) -> int:
        self._check_open()
        ids = as_ids(ids)
        if self._faiss is None:
            assert self._store is not None
            return self._store.remove(ids)
        removed = self._remove_from_faiss(ids)
        if self._store is not None:
            self._store.remove(ids)
        return removed

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        allowed: NDArray[np.int64] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        self._check_open()
        queries = as_queries(queries, self._dimension)
        k = check_k(k)
        allowed = as_allowed(allowed)
        if self._faiss is None:
            assert self._store is not None
            return self._store.search(queries, k, allowed=allowed)
        if len(queries) == 0 or len(self) == 0:
            return empty_result(len(queries), k)
        nprobe = self.nprobe
        if allowed is not None:
            if len(allowed) == 0:
                return empty_result(len(queries), k)
            selective = len(allowed) <= max(self.selective, len(self) // 100)
            if selective and self._store is not None:
                return self._store.search_subset(queries, k, allowed)
            if selective:
                nprobe = self.nlist
        fetch = k * self.rerank if self.rerank else k
        scores, ids = self._faiss_search(queries, fetch, nprobe, allowed)
        if allowed is not None and nprobe < self.nlist and (ids[:, k - 1] < 0).any():
            # A filter that left fewer than k in the probed lists: probe them all.
            scores, ids = self._faiss_search(queries, fetch, self.nlist, allowed)
        if self.rerank:
            return self._rerank(queries, ids, k)
        return _clean(scores[:, :k], ids[:, :k])

    def params(self) -> dict[str, Any]:
        code = self._code_bytes()
        per_vector = code + 8 + 8  # codes, the list's id, the present-id bookkeeping
        if self.rerank:
            per_vector += 4 * self._dimension + 8
        out: dict[str, Any] = {
            "kind": self.kind,
            "library": "faiss",
            "metric": "cosine",
            "dimension": self._dimension,
            "namespace": self.namespace,
            "count": len(self),
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "trained": self.trained,
            "train_size": self.train_size,
            "code_bytes_per_vector": code,
            "bytes_per_vector": per_vector if self.trained else 4 * self._dimension + 8,
            "index_bytes_per_vector": self._measured_bytes_per_vector(),
        }
        if self.pq:
            out |= {"m": self.m, "nbits": self.nbits, "rerank": self.rerank}
        return out

    def save(self, directory: Path) -> None:
        import faiss

        self._check_open()
        directory = Path(directory)
        write_meta(directory, self.params())
        if self._faiss is not None:
            faiss.write_index(self._faiss, str(directory / _FAISS_FILE))
        if self._store is not None:
            self._store.save(directory / _STORE_DIR)

    def close(self) -> None:
        self._closed = True
        self._faiss = None
        self._store = None

    # -- inside ---------------------------------------------------------------------------

    def _train(self) -> None:
        faiss = faiss_module()

        assert self._store is not None
        quantizer = faiss.IndexFlatIP(self._dimension)
        index: Any
        if self.pq:
            index = faiss.IndexIVFPQ(
                quantizer,
                self._dimension,
                self.nlist,
                self.m,
                self.nbits,
                faiss.METRIC_INNER_PRODUCT,
            )
        else:
            index = faiss.IndexIVFFlat(
                quantizer, self._dimension, self.nlist, faiss.METRIC_INNER_PRODUCT
            )
        index.cp.seed = 16  # reproducible centroids for the same vectors
        vectors, ids = self._store.matrix.copy(), self._store.ids.copy()
        index.train(vectors)
        index.add_with_ids(vectors, ids)
        self._faiss = index
        self._quantizer = quantizer  # faiss keeps a pointer: keep the Python object alive
        if not self.rerank:
            self._store = None

    def _remove_from_faiss(self, ids: NDArray[np.int64]) -> int:
        import faiss

        if len(ids) == 0:
            return 0
        return int(self._faiss.remove_ids(faiss.IDSelectorBatch(ids)))

    def _faiss_search(
        self,
        queries: NDArray[np.float32],
        k: int,
        nprobe: int,
        allowed: NDArray[np.int64] | None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        import faiss

        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)
            params.sel = selector
        scores, ids = self._faiss.search(queries, k, params=params)
        return scores, ids

    def _rerank(
        self, queries: NDArray[np.float32], candidates: NDArray[np.int64], k: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        assert self._store is not None
        out_scores, out_ids = empty_result(len(queries), k)
        for row, query in enumerate(queries):
            found = candidates[row][candidates[row] >= 0]
            if len(found) == 0:
                continue
            vectors = self._store.vectors_of(found)
            scores, ids = exact_top_k(vectors, found, query[None, :], k)
            out_scores[row], out_ids[row] = scores[0], ids[0]
        return out_scores, out_ids

    def _code_bytes(self) -> int:
        if self.pq:
            return (self.m * self.nbits + 7) // 8
        return 4 * self._dimension

    def _measured_bytes_per_vector(self) -> float | None:
        """The serialized faiss index's size over its vector count (centroids included)."""
        import faiss

        if self._faiss is None or self._faiss.ntotal == 0:
            return None
        size = len(faiss.serialize_index(self._faiss))
        if self._store is not None:
            size += len(self._store) * (4 * self._dimension + 8)
        return round(size / int(self._faiss.ntotal), 1)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the {self.kind} index {self.namespace!r} is closed")


def _clean(
    scores: NDArray[np.float32], ids: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """faiss marks missing results with id -1 and a huge negative score: make it -inf."""
    import numpy as np

    scores = scores.astype(np.float32, copy=True)
    scores[ids < 0] = -np.inf
    return scores, ids.astype(np.int64, copy=False)
