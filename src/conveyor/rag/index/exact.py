"""``exact://``: brute-force search by one matrix product, the reference every other index is
measured against and the default for small collections (a few tens of thousands of chunks
are searched in about a millisecond on one core).

The vectors live in one float32 matrix grown by doubling; an id maps to its row, and a removed
row is filled by the last one, so the matrix stays dense. The approximate indexes also use
this class as their store of original vectors (exact search over a selective filter's ids,
re-ranking).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from conveyor.backends import BackendURL, Closeable
from conveyor.errors import ClosedError
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
    read_meta,
    write_meta,
)
from conveyor.rag.index._topk import empty_result, exact_top_k

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["ExactIndex"]

_FILE = "exact.npz"


class ExactIndex(Closeable):
    """Exact cosine search over L2-normalized float32 rows (``exact://``, no parameters)."""

    kind = "exact"

    def __init__(self, dimension: int, namespace: str = "default") -> None:
        import numpy as np

        self._dimension = check_dimension(dimension)
        self.namespace = check_namespace(namespace)
        self._matrix = np.zeros((0, dimension), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._rows: dict[int, int] = {}
        self._size = 0
        self._closed = False

    # -- the seam's constructors ----------------------------------------------------------

    @classmethod
    def from_url(cls, url: BackendURL, *, dimension: int, namespace: str) -> Self:
        check_url(url, (), "exact index")
        return cls(dimension, namespace)

    @classmethod
    def load(
        cls, url: BackendURL, directory: Path | None, *, dimension: int, namespace: str
    ) -> Self:
        import numpy as np

        check_url(url, (), "exact index")
        read_meta(directory, cls.kind, dimension)
        assert directory is not None
        index = cls(dimension, namespace)
        with np.load(Path(directory) / _FILE) as data:
            index.add(data["ids"], data["vectors"])
        return index

    # -- the protocol ---------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dimension

    def __len__(self) -> int:
        return self._size

    @property
    def ids(self) -> NDArray[np.int64]:
        """The ids present, in row order (a view: copy before changing the index)."""
        return self._ids[: self._size]

    @property
    def matrix(self) -> NDArray[np.float32]:
        """The vectors, one row per id of :attr:`ids` (a view)."""
        return self._matrix[: self._size]

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        """Add rows; an id already present has its vector replaced."""
        self._check_open()
        ids = as_ids(ids)
        vectors = as_vectors(vectors, self._dimension)
        check_batch(ids, vectors)
        fresh = [i for i, key in enumerate(ids.tolist()) if key not in self._rows]
        for i, key in enumerate(ids.tolist()):
            row = self._rows.get(key)
            if row is not None:
                self._matrix[row] = vectors[i]
        if not fresh:
            return
        self._grow(self._size + len(fresh))
        start, stop = self._size, self._size + len(fresh)
        self._matrix[start:stop] = vectors[fresh]
        self._ids[start:stop] = ids[fresh]
        for offset, key in enumerate(ids[fresh].tolist()):
            self._rows[key] = start + offset
        self._size = stop

    def remove(self, ids: NDArray[np.int64]) -> int:
        self._check_open()
        removed = 0
        for key in as_ids(ids).tolist():
            row = self._rows.pop(key, None)
            if row is None:
                continue
            last = self._size - 1
            if row != last:
                moved = int(self._ids[last])
                self._matrix[row] = self._matrix[last]
                self._ids[row] = moved
                self._rows[moved] = row
            self._size = last
            removed += 1
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
        if allowed is None:
            return exact_top_k(self.matrix, self.ids, queries, k)
        return self.search_subset(queries, k, allowed)

    def search_subset(
        self, queries: NDArray[np.float32], k: int, allowed: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Exact search over the present ids among ``allowed`` (checked inputs)."""
        rows = self.rows_of(allowed)
        if len(rows) == 0:
            return empty_result(len(queries), k)
        if len(rows) == self._size:
            return exact_top_k(self.matrix, self.ids, queries, k)
        rows.sort()
        return exact_top_k(self._matrix[rows], self._ids[rows], queries, k)

    def rows_of(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """The rows of the ids that are present (absent ids are skipped)."""
        import numpy as np

        get = self._rows.get
        found = [row for row in map(get, ids.tolist()) if row is not None]
        return np.asarray(found, dtype=np.int64)

    def vectors_of(self, ids: NDArray[np.int64]) -> NDArray[np.float32]:
        """The stored vectors of ``ids`` (all present)."""
        return self._matrix[self.rows_of(ids)]

    def contains(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        import numpy as np

        return np.fromiter((key in self._rows for key in ids.tolist()), bool, len(ids))

    def params(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metric": "cosine",
            "dimension": self._dimension,
            "namespace": self.namespace,
            "count": self._size,
            "bytes_per_vector": 4 * self._dimension + 8,
        }

    def save(self, directory: Path) -> None:
        import numpy as np

        self._check_open()
        directory = Path(directory)
        write_meta(directory, self.params())
        np.savez(directory / _FILE, ids=self.ids, vectors=self.matrix)

    def close(self) -> None:
        self._closed = True

    # -- inside ---------------------------------------------------------------------------

    def _grow(self, needed: int) -> None:
        import numpy as np

        if needed <= len(self._ids):
            return
        capacity = max(needed, 2 * len(self._ids), 1024)
        matrix = np.empty((capacity, self._dimension), dtype=np.float32)
        matrix[: self._size] = self._matrix[: self._size]
        ids = np.empty(capacity, dtype=np.int64)
        ids[: self._size] = self._ids[: self._size]
        self._matrix, self._ids = matrix, ids

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the {self.kind} index {self.namespace!r} is closed")
