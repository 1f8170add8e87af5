"""``hnsw://``: the embedded default, an HNSW graph built with usearch.

``hnsw://?m=32&ef_construction=200&ef_search=96&dtype=f32``. The library was chosen by
``benchmarks/rag_index.py``, which builds faiss-cpu's ``IndexHNSWFlat``, hnswlib and usearch
with the same M and ef_construction on the same 200k x 384 embedding-like vectors and
searches them on one thread at several ef (figures in ``docs/rag/index.md``): usearch
reached the recall target at the highest single-thread rate of the three, built fastest,
installs as a wheel with no compiler, deletes natively and saves to one file.

- **Ids** are the chunks' int64 row ids, used directly as usearch's uint64 keys.
- **Deletion**: usearch removes a key from the graph's results at once (a tombstone); the
  saved file keeps it removed. Adding an id again replaces its vector.
- **Persistence**: one ``.usearch`` file plus ``index.json`` (the build parameters, which the
  file alone does not restore); a save/load round trip answers identically.
- **Filters** (``allowed``): a selective filter (at most ``max(4096, n / 100)`` of the ids
  present) is searched exactly over those ids' stored vectors (a matrix product: faster and
  exact). A broad one oversamples: the graph is asked for ``k * n / |allowed|`` candidates
  (doubled while too few pass), the others are dropped; if that reaches the whole index the
  search falls back to exact over the subset. Only allowed ids are ever returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from conveyor.backends import BackendURL, Closeable
from conveyor.errors import ClosedError, InvalidInputError
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
from conveyor.rag.index._topk import empty_result, exact_top_k, merge_rows

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["HnswIndex"]

_FILE = "hnsw.usearch"
_OPTIONS = ("m", "ef_construction", "ef_search", "dtype")
_DTYPES = ("f32", "f16", "bf16", "i8")
#: Filters with at most this many present ids (or 1% of the index) are searched exactly.
SELECTIVE = 4096
DEFAULTS = {"m": 32, "ef_construction": 200, "ef_search": 96, "dtype": "f32"}


class HnswIndex(Closeable):
    """An HNSW graph (usearch, inner product on normalized rows); see the module's notes."""

    kind = "hnsw"

    def __init__(
        self,
        dimension: int,
        namespace: str = "default",
        *,
        m: int = DEFAULTS["m"],  # type: ignore[assignment]
        ef_construction: int = DEFAULTS["ef_construction"],  # type: ignore[assignment]
        ef_search: int = DEFAULTS["ef_search"],  # type: ignore[assignment]
        dtype: str = DEFAULTS["dtype"],  # type: ignore[assignment]
        _index: Any = None,
    ) -> None:
        from usearch.index import Index

        self._dimension = check_dimension(dimension)
        self.namespace = check_namespace(namespace)
        if dtype not in _DTYPES:
            raise InvalidInputError(
                f"hnsw: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}", field="dtype"
            )
        self.m, self.ef_construction, self.ef_search, self.dtype = (
            m,
            ef_construction,
            ef_search,
            dtype,
        )
        self._index: Any = _index or Index(
            ndim=dimension,
            metric="ip",
            dtype=dtype,
            connectivity=m,
            expansion_add=ef_construction,
            expansion_search=ef_search,
        )
        self._apply_expansions()
        #: A filter with at most this many present ids (or 1% of the index) is searched
        #: exactly over them; a broader one by oversampling the graph.
        self.selective = SELECTIVE
        self._closed = False

    # -- the seam's constructors ----------------------------------------------------------

    @classmethod
    def _options(cls, url: BackendURL) -> dict[str, Any]:
        check_url(url, _OPTIONS, "hnsw index")
        return {
            "m": int_param(url, "m", DEFAULTS["m"], minimum=2),  # type: ignore[arg-type]
            "ef_construction": int_param(
                url,
                "ef_construction",
                DEFAULTS["ef_construction"],  # type: ignore[arg-type]
            ),
            "ef_search": int_param(url, "ef_search", DEFAULTS["ef_search"]),  # type: ignore[arg-type]
            "dtype": url.query.get("dtype", DEFAULTS["dtype"]),
        }

    @classmethod
    def from_url(cls, url: BackendURL, *, dimension: int, namespace: str) -> Self:
        return cls(dimension, namespace, **cls._options(url))

    @classmethod
    def load(
        cls, url: BackendURL, directory: Path | None, *, dimension: int, namespace: str
    ) -> Self:
        """The saved graph; ``ef_search`` (a search setting) may be changed by the URL."""
        from usearch.index import Index

        options = cls._options(url)
        meta = read_meta(directory, cls.kind, dimension)
        assert directory is not None
        graph = Index.restore(str(Path(directory) / _FILE))
        if graph is None:
            raise InvalidInputError(f"{directory / _FILE} is not a usearch index", field="url")
        ef_search = options["ef_search"] if "ef_search" in url.query else meta["ef_search"]
        return cls(
            dimension,
            namespace,
            m=meta["m"],
            ef_construction=meta["ef_construction"],
            ef_search=ef_search,
            dtype=meta["dtype"],
            _index=graph,
        )

    # -- the protocol ---------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dimension

    def __len__(self) -> int:
        return len(self._index)

    def set_ef_search(self, ef_search: int) -> None:
        """Change the search breadth (recall against speed) without rebuilding."""
        if not isinstance(ef_search, int) or ef_search < 1:
            raise InvalidInputError(f"ef_search must be >= 1, got {ef_search!r}")
        self.ef_search = ef_search
        self._index.expansion_search = ef_search

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        """Add rows (all cores); an id already present has its vector replaced."""
        import numpy as np

        self._check_open()
        ids = as_ids(ids)
        vectors = as_vectors(vectors, self._dimension)
        check_batch(ids, vectors)
        if len(ids) == 0:
            return
        keys = ids.astype(np.uint64)
        present = np.asarray(self._index.contains(keys), dtype=bool)
        if present.any():
            self._index.remove(keys[present])
        self._index.add(keys, vectors, threads=0)

    def remove(self, ids: NDArray[np.int64]) -> int:
        import numpy as np

        self._check_open()
        ids = np.unique(as_ids(ids))
        if len(ids) == 0:
            return 0
        keys = ids.astype(np.uint64)
        present = keys[np.asarray(self._index.contains(keys), dtype=bool)]
        if len(present):
            self._index.remove(present)
        return len(present)

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
        if len(queries) == 0 or len(self) == 0:
            return empty_result(len(queries), k)
        if allowed is None:
            return self._graph_search(queries, k)
        return self._filtered_search(queries, k, allowed)

    def params(self) -> dict[str, Any]:
        import usearch

        count = len(self._index)
        return {
            "kind": self.kind,
            "library": f"usearch {usearch.__version__}",
            "metric": "cosine",
            "dimension": self._dimension,
            "namespace": self.namespace,
            "count": count,
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "dtype": self.dtype,
            "bytes_per_vector": round(self._index.serialized_length / count, 1) if count else None,
        }

    def save(self, directory: Path) -> None:
        self._check_open()
        directory = Path(directory)
        write_meta(directory, self.params())
        self._index.save(str(directory / _FILE))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._index = None

    # -- inside ---------------------------------------------------------------------------

    def _graph_search(
        self, queries: NDArray[np.float32], count: int, k: int | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The graph's ``count`` best per query, padded (scores = 1 - usearch's distance)."""
        import numpy as np

        k = count if k is None else k
        matches = self._index.search(queries, count, threads=0)
        keys = np.atleast_2d(matches.keys).astype(np.int64)
        distances = np.atleast_2d(matches.distances)
        counts = np.atleast_1d(getattr(matches, "counts", np.array([keys.shape[1]])))
        scores, ids = empty_result(len(queries), k)
        width = min(k, keys.shape[1])
        valid = np.arange(width)[None, :] < counts[:, None]
        ids[:, :width] = np.where(valid, keys[:, :width], -1)
        # Slots past a row's count hold garbage: never compute with them.
        near = np.where(valid, distances[:, :width], 0.0)
        scores[:, :width] = np.where(valid, 1.0 - near, -np.inf)
        return scores, ids

    def _filtered_search(
        self, queries: NDArray[np.float32], k: int, allowed: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        import numpy as np

        present = allowed[np.asarray(self._index.contains(allowed.astype(np.uint64)), bool)]
        n = len(self)
        if len(present) == 0:
            return empty_result(len(queries), k)
        if len(present) <= max(self.selective, n // 100):
            return self._exact_subset(queries, k, present)
        fetch = min(n, max(2 * k, int(np.ceil(2 * k * n / len(present)))))
        while True:
            scores, ids = self._graph_search(queries, fetch)
            keep = np.isin(ids, present)
            if (keep.sum(axis=1) >= min(k, len(present))).all():
                return merge_rows(scores, ids, keep, k)
            if fetch >= n:
                return self._exact_subset(queries, k, present)
            fetch = min(n, 2 * fetch)

    def _exact_subset(
        self, queries: NDArray[np.float32], k: int, present: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        import numpy as np

        found: Any = self._index.get(present.astype(np.uint64), dtype="f32")
        rows = found if isinstance(found, np.ndarray) and found.ndim == 2 else np.stack(found)
        return exact_top_k(rows.astype(np.float32, copy=False), present, queries, k)

    def _apply_expansions(self) -> None:
        # A restored file comes back with usearch's defaults, not the saved build's.
        self._index.expansion_add = self.ef_construction
        self._index.expansion_search = self.ef_search

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the hnsw index {self.namespace!r} is closed")
