"""Top-k selection shared by the indexes: exact scores by a matrix product, results padded to
``k`` with ``-1`` ids and ``-inf`` scores, the best first."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["empty_result", "exact_top_k", "merge_rows", "top_k"]

Result = tuple["NDArray[np.float32]", "NDArray[np.int64]"]


def empty_result(n_queries: int, k: int) -> Result:
    import numpy as np

    return (
        np.full((n_queries, k), -np.inf, dtype=np.float32),
        np.full((n_queries, k), -1, dtype=np.int64),
    )


def top_k(scores: NDArray[np.float32], ids: NDArray[np.int64], k: int) -> Result:
    """The ``k`` best columns of ``scores`` (one row per query; ``ids`` labels the columns)."""
    import numpy as np

    n_queries, n = scores.shape
    out_scores, out_ids = empty_result(n_queries, k)
    if n == 0:
        return out_scores, out_ids
    take = min(k, n)
    if take < n:
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(n), (n_queries, n))
    best = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    cols = np.take_along_axis(part, order, axis=1)
    out_scores[:, :take] = np.take_along_axis(best, order, axis=1)
    out_ids[:, :take] = ids[cols]
    return out_scores, out_ids


def exact_top_k(
    matrix: NDArray[np.float32], ids: NDArray[np.int64], queries: NDArray[np.float32], k: int
) -> Result:
    """Exact inner-product search of ``queries`` over the rows of ``matrix`` (in query blocks,
    so a large index never needs a (queries x rows) matrix bigger than about 256 MB)."""
    import numpy as np

    out_scores, out_ids = empty_result(len(queries), k)
    if len(ids) == 0 or len(queries) == 0:
        return out_scores, out_ids
    block = max(1, (64 << 20) // max(1, len(ids)))
    for start in range(0, len(queries), block):
        stop = start + block
        scores = queries[start:stop] @ matrix.T
        out_scores[start:stop], out_ids[start:stop] = top_k(
            scores.astype(np.float32, copy=False), ids, k
        )
    return out_scores, out_ids


def merge_rows(
    scores: NDArray[np.float32], ids: NDArray[np.int64], keep: NDArray[np.bool_], k: int
) -> Result:
    """Per row, the first ``k`` entries where ``keep`` holds (entries are already best first)."""
    import numpy as np

    out_scores, out_ids = empty_result(len(ids), k)
    for row in range(len(ids)):
        chosen = np.flatnonzero(keep[row])[:k]
        out_scores[row, : len(chosen)] = scores[row, chosen]
        out_ids[row, : len(chosen)] = ids[row, chosen]
    return out_scores, out_ids
