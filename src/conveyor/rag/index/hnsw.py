"""``hnsw://``: the embedded default, an HNSW graph built with faiss (``IndexHNSWFlat``).

``hnsw://?m=32&ef_construction=128&ef_search=128`` (the defaults). The library was chosen by
``benchmarks/rag_index.py``, which builds faiss-cpu's ``IndexHNSWFlat``, hnswlib and usearch
with the same M and ef_construction on the same 200k x 384 embedding-like vectors and
searches them on one thread at several ef (figures and the reasoning in
``docs/rag/index.md``): faiss answered the most queries per core at every recall measured
(hnswlib 2-7% behind, usearch 2.3x), installs as a wheel, and is already the dependency of
``ivf://`` and ``ivfpq://``.

- **Ids**: the graph's rows are numbered in insertion order; the index keeps row -> id (an
  int64 array) and id -> row, so ids are any non-negative int64.
- **Deletion**: faiss's HNSW cannot unlink a node, so a removed row is marked in a bitmap and
  every search passes faiss a selector that excludes it (``SearchParametersHNSW.sel``): a
  removed id is never returned, and the bitmap is saved with the graph. Adding an id again
  marks its old row removed and appends a new one. The removed rows' space comes back when
  the collection is rebuilt (a new version); ``params()["removed_rows"]`` says how many.
- **Filters** (``allowed``): a selective filter (at most ``max(4096, n / 100)`` ids present)
  is searched exactly over those rows' stored vectors (a matrix product: exact, and faster
  than walking a graph where most nodes are excluded); a broad one uses faiss's filtered
  graph search with a bitmap of the allowed rows, falling back to the exact subset search in
  the rare case it returns fewer than ``k`` while more are allowed. Only allowed ids are
  ever returned.
- **Persistence**: ``hnsw.faiss`` (the graph and vectors), ``rows.npz`` (row -> id, removed
  rows) and ``index.json`` (the parameters); a save/load round trip answers identically.
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

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["HnswIndex"]

_GRAPH_FILE = "hnsw.faiss"
_ROWS_FILE = "rows.npz"
_OPTIONS = ("m", "ef_construction", "ef_search", "storage")
_VECTORS_FILE = "vectors.npy"
_STORAGES = ("flat", "sq8")
#: Filters with at most this many present ids (or 1% of the index) are searched exactly.
SELECTIVE = 4096
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 128
DEFAULT_EF_SEARCH = 128  # recall@10 0.978 at ~1,000 q/s per core on the benchmark (ef 96: 0.967)


class HnswIndex(Closeable):
    """An HNSW graph (faiss, inner product on normalized rows); see the module's notes."""

    kind = "hnsw"

    def __init__(
        self,
        dimension: int,
        namespace: str = "default",
        *,
        m: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef_search: int = DEFAULT_EF_SEARCH,
        storage: str = "flat",
    ) -> None:
        faiss = faiss_module()
        import numpy as np

        self._dimension = check_dimension(dimension)
        self.namespace = check_namespace(namespace)
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        if storage not in _STORAGES:
            raise InvalidInputError(
                f"hnsw: storage must be flat or sq8, got {storage!r}", field="storage"
            )
        self.storage = storage
        self._index: Any
        if storage == "sq8":
            # The graph over 8-bit codes; candidates re-scored from the float32 copy below.
            self._index = faiss.IndexHNSWSQ(
                dimension,
                faiss.ScalarQuantizer.QT_8bit,
                m,
                faiss.METRIC_INNER_PRODUCT,
            )
        else:
            self._index = faiss.IndexHNSWFlat(dimension, m, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = ef_construction
        self._vectors = np.zeros((0, dimension), dtype=np.float32)  # sq8: row -> float32
        self._row_ids = np.zeros(0, dtype=np.int64)  # row -> id
        self._removed = np.zeros(0, dtype=bool)  # row -> removed
        self._rows: dict[int, int] = {}  # id -> row, live rows only
        self._live_bits: NDArray[np.uint8] | None = None  # cached selector bitmap
        #: A filter with at most this many present ids (or 1% of the index) is searched
        #: exactly over them; a broader one by faiss's filtered graph search.
        self.selective = SELECTIVE
        self._closed = False

    # -- the seam's constructors ----------------------------------------------------------

    @classmethod
    def _options(cls, url: BackendURL) -> dict[str, Any]:
        check_url(url, _OPTIONS, "hnsw index")
        return {
            "m": int_param(url, "m", DEFAULT_M, minimum=2),
            "ef_construction": int_param(url, "ef_construction", DEFAULT_EF_CONSTRUCTION),
            "ef_search": int_param(url, "ef_search", DEFAULT_EF_SEARCH),
            "storage": url.query.get("storage", "flat"),
        }

    @classmethod
    def from_url(cls, url: BackendURL, *, dimension: int, namespace: str) -> Self:
        return cls(dimension, namespace, **cls._options(url))

    @classmethod
    def load(
        cls, url: BackendURL, directory: Path | None, *, dimension: int, namespace: str
    ) -> Self:
        """The saved graph; ``ef_search`` (a search setting) may be changed by the URL."""
        import faiss
        import numpy as np

        options = cls._options(url)
        meta = read_meta(directory, cls.kind, dimension)
        assert directory is not None
        directory = Path(directory)
        ef_search = options["ef_search"] if "ef_search" in url.query else meta["ef_search"]
        index = cls(
            dimension,
            namespace,
            m=meta["m"],
            ef_construction=meta["ef_construction"],
            ef_search=ef_search,
            storage=meta.get("storage", "flat"),
        )
        index._index = faiss.read_index(str(directory / _GRAPH_FILE))
        if index.storage == "sq8":
            index._vectors = np.load(directory / _VECTORS_FILE)
        with np.load(directory / _ROWS_FILE) as rows:
            index._row_ids = rows["ids"].astype(np.int64)
            index._removed = rows["removed"].astype(bool)
        live = np.flatnonzero(~index._removed)
        index._rows = dict(zip(index._row_ids[live].tolist(), live.tolist(), strict=True))
        return index

    # -- the protocol ---------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dimension

    def __len__(self) -> int:
        return len(self._rows)

    def set_ef_search(self, ef_search: int) -> None:
        """Change the search breadth (recall against speed) without rebuilding."""
        if not isinstance(ef_search, int) or ef_search < 1:
            raise InvalidInputError(f"ef_search must be >= 1, got {ef_search!r}")
        self.ef_search = ef_search

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        """Append rows (faiss builds on all cores); an id already present is replaced."""
        import numpy as np

        self._check_open()
        ids = as_ids(ids)
        vectors = as_vectors(vectors, self._dimension)
        check_batch(ids, vectors)
        if len(ids) == 0:
            return
        self._mark_removed(ids)
        start = int(self._index.ntotal)
        if self.storage == "sq8":
            if not self._index.is_trained:
                # The 8-bit ranges come from the first batch; values outside them are clipped
                # in the graph only: results are re-scored from the float32 copy.
                self._index.train(vectors)
            self._vectors = np.concatenate([self._vectors, vectors])
        self._index.add(vectors)
        self._row_ids = np.concatenate([self._row_ids, ids])
        self._removed = np.concatenate([self._removed, np.zeros(len(ids), dtype=bool)])
        self._rows.update(zip(ids.tolist(), range(start, start + len(ids)), strict=True))
        self._live_bits = None

    def remove(self, ids: NDArray[np.int64]) -> int:
        self._check_open()
        return self._mark_removed(as_ids(ids))

    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        allowed: NDArray[np.int64] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        import numpy as np

        self._check_open()
        queries = as_queries(queries, self._dimension)
        k = check_k(k)
        allowed = as_allowed(allowed)
        if len(queries) == 0 or len(self) == 0:
            return empty_result(len(queries), k)
        if allowed is None:
            bits = self._live_bitmap() if self._removed.any() else None
            return self._graph_search(queries, k, bits)
        rows = self._rows_of(allowed)
        if len(rows) == 0:
            return empty_result(len(queries), k)
        if len(rows) <= max(self.selective, len(self) // 100):
            return self._exact_rows(queries, k, rows)
        mask = np.zeros(int(self._index.ntotal), dtype=bool)
        mask[rows] = True
        scores, ids = self._graph_search(queries, k, np.packbits(mask, bitorder="little"))
        if (ids[:, min(k, len(rows)) - 1] < 0).any():
            return self._exact_rows(queries, k, rows)  # the graph ran dry inside the filter
        return scores, ids

    def params(self) -> dict[str, Any]:
        import faiss

        return {
            "kind": self.kind,
            "library": f"faiss {faiss.__version__} IndexHNSWFlat",
            "metric": "cosine",
            "dimension": self._dimension,
            "namespace": self.namespace,
            "count": len(self),
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "storage": self.storage,
            "removed_rows": int(self._removed.sum()),
            "bytes_per_vector": self._bytes_per_vector(),
        }

    def save(self, directory: Path) -> None:
        import faiss
        import numpy as np

        self._check_open()
        directory = Path(directory)
        write_meta(directory, self.params())
        faiss.write_index(self._index, str(directory / _GRAPH_FILE))
        if self.storage == "sq8":
            np.save(directory / _VECTORS_FILE, self._vectors)
        np.savez(directory / _ROWS_FILE, ids=self._row_ids, removed=self._removed)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._index = None
            self._rows = {}

    # -- inside ---------------------------------------------------------------------------

    def _mark_removed(self, ids: NDArray[np.int64]) -> int:
        pop = self._rows.pop
        rows = [row for row in (pop(key, None) for key in ids.tolist()) if row is not None]
        if rows:
            self._removed[rows] = True
            self._live_bits = None
        return len(rows)

    def _rows_of(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        import numpy as np

        get = self._rows.get
        return np.asarray(
            sorted(row for row in map(get, ids.tolist()) if row is not None), dtype=np.int64
        )

    def _live_bitmap(self) -> NDArray[np.uint8]:
        import numpy as np

        if self._live_bits is None:
            self._live_bits = np.packbits(~self._removed, bitorder="little")
        return self._live_bits

    def _graph_search(
        self, queries: NDArray[np.float32], k: int, bits: NDArray[np.uint8] | None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """faiss's search (rows allowed by ``bits``, if given), mapped from rows to ids."""
        import faiss
        import numpy as np

        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.efSearch = max(self.ef_search, k)
        if bits is not None:
            selector = faiss.IDSelectorBitmap(int(self._index.ntotal), faiss.swig_ptr(bits))
            params.sel = selector
        if self.storage == "sq8":
            # Twice k candidates by the 8-bit codes, the best k of them by exact scores.
            params.efSearch = max(self.ef_search, 2 * k)
            scores, rows = self._index.search(queries, 2 * k, params=params)
            scores = self._rescore(queries, rows)[:, :k]
            rows = rows[:, :k]
        else:
            scores, rows = self._index.search(queries, k, params=params)
        found = rows >= 0
        ids = np.where(found, self._row_ids[np.where(found, rows, 0)], -1).astype(np.int64)
        return np.where(found, scores, -np.inf).astype(np.float32), ids

    def _exact_rows(
        self, queries: NDArray[np.float32], k: int, rows: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        if self.storage == "sq8":
            vectors = self._vectors[rows]
        else:
            vectors = self._index.reconstruct_batch(rows)
        return exact_top_k(vectors, self._row_ids[rows], queries, k)

    def _rescore(
        self, queries: NDArray[np.float32], rows: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        """Exact scores of the graph's candidates, each query's row re-sorted best first
        (``rows`` is re-ordered in place to match)."""
        import numpy as np

        found = rows >= 0
        vectors = self._vectors[np.where(found, rows, 0)]
        scores = np.einsum("qd,qkd->qk", queries, vectors).astype(np.float32)
        scores[~found] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")
        rows[:] = np.take_along_axis(rows, order, axis=1)
        return np.take_along_axis(scores, order, axis=1)

    def _bytes_per_vector(self) -> float | None:
        """Vectors, graph links (level 0 and above), offsets, row -> id, removed flag."""
        total = int(self._index.ntotal)
        if total == 0:
            return None
        links = int(self._index.hnsw.neighbors.size()) * 4
        per_row = 4 * self._dimension + 8 + 4 + 8 + 1  # vector, offset, level, id, flag
        if self.storage == "sq8":
            per_row += self._dimension  # the 8-bit codes beside the float32 copy
        return round((links + total * per_row) / max(1, len(self)), 1)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the hnsw index {self.namespace!r} is closed")
