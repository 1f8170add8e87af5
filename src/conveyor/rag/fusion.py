"""Fusing ranked lists: reciprocal rank fusion and a convex combination of normalized scores.

Both take the stages' results as ``{stage: (scores, ids)}`` (each a best-first array, ids
``-1`` for padding, as the indexes return them) and answer one fused ``(scores, ids)``.

- :func:`rrf`: ``score(d) = sum over lists of 1 / (k + rank(d))``, ``rank`` 1-based,
  ``k = 60`` (Cormack, Clarke and Buettcher, 2009). Only ranks count, so the score scales
  of BM25 and cosine do not matter.
- :func:`convex`: ``score(d) = w * norm(dense(d)) + (1 - w) * norm(bm25(d))``, each list's
  scores normalized per query (``minmax``: ``(s - min) / (max - min)``; ``zscore``:
  ``(s - mean) / std``) over that list's candidates. A candidate absent from one list gets
  that list's lowest normalized value (it was not among its best, so it scores as the
  worst seen). The weight ``w`` (of the dense list) is tuned on a labelled set with
  :func:`tune_weight`, which returns the best weight and the whole curve so a collection
  version can store both.

Which normalization and which fusion were measured on the docstring set
(``docs/rag/retrieval.md``): z-score and min-max are within 0.003 nDCG@10 of each other
there; z-score is the default (:data:`DEFAULT_NORMALIZATION`), for tuning and serving alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "Normalization",
    "Ranked",
    "WeightCurve",
    "convex",
    "normalize",
    "rrf",
    "tune_weight",
]

Normalization = Literal["minmax", "zscore"]
#: One stage's answer: ``(scores, ids)``, best first, ids ``-1`` for padding.
Ranked = tuple["NDArray[np.float32]", "NDArray[np.int64]"]

RRF_K = 60
#: The per-query normalization convex fusion uses unless told otherwise.
DEFAULT_NORMALIZATION: Normalization = "zscore"


def _valid(result: Ranked) -> Ranked:
    import numpy as np

    scores = np.asarray(result[0], dtype=np.float32).ravel()
    ids = np.asarray(result[1], dtype=np.int64).ravel()
    if scores.shape != ids.shape:
        raise InvalidInputError(
            f"scores and ids differ in length: {scores.shape[0]} and {ids.shape[0]}",
            field="ranked",
        )
    keep = (ids >= 0) & np.isfinite(scores)
    return scores[keep], ids[keep]


def _top(fused: dict[int, float], k: int | None) -> Ranked:
    import numpy as np

    items = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    if k is not None:
        items = items[:k]
    ids = np.fromiter((i for i, _ in items), dtype=np.int64, count=len(items))
    scores = np.fromiter((s for _, s in items), dtype=np.float32, count=len(items))
    return scores, ids


def rrf(results: Mapping[str, Ranked], *, k: int = RRF_K, limit: int | None = None) -> Ranked:
    """Reciprocal rank fusion of several best-first lists; ties broken by id."""
    if k < 0:
        raise InvalidInputError(f"the RRF constant must be >= 0, got {k}", field="k")
    fused: dict[int, float] = {}
    for result in results.values():
        _, ids = _valid(result)
        for rank, chunk_id in enumerate(ids.tolist(), start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return _top(fused, limit)


def normalize(
    scores: NDArray[np.floating[Any]], method: Normalization = "minmax"
) -> NDArray[np.float64]:
    """One query's scores on a common scale. Min-max maps to ``[0, 1]`` (all equal -> all
    1); z-score to mean 0, standard deviation 1 (all equal -> all 0)."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    if method == "minmax":
        lo, hi = float(s.min()), float(s.max())
        return np.ones_like(s) if hi - lo <= 0 else (s - lo) / (hi - lo)
    if method == "zscore":
        sd = float(s.std())
        return np.zeros_like(s) if sd <= 0 else (s - float(s.mean())) / sd
    raise InvalidInputError(
        f"normalization must be 'minmax' or 'zscore', got {method!r}", field="normalization"
    )


def convex(
    dense: Ranked,
    bm25: Ranked,
    *,
    weight: float,
    normalization: Normalization = DEFAULT_NORMALIZATION,
    limit: int | None = None,
) -> Ranked:
    """``weight * norm(dense) + (1 - weight) * norm(bm25)`` over the union of candidates."""
    if not 0.0 <= weight <= 1.0:
        raise InvalidInputError(f"the dense weight must be in [0, 1], got {weight}", field="weight")
    d_scores, d_ids = _valid(dense)
    b_scores, b_ids = _valid(bm25)
    d_norm = normalize(d_scores, normalization)
    b_norm = normalize(b_scores, normalization)
    d_floor = float(d_norm.min()) if d_norm.size else 0.0
    b_floor = float(b_norm.min()) if b_norm.size else 0.0
    d_map = dict(zip(d_ids.tolist(), d_norm.tolist(), strict=True))
    b_map = dict(zip(b_ids.tolist(), b_norm.tolist(), strict=True))
    fused = {
        i: weight * d_map.get(i, d_floor) + (1.0 - weight) * b_map.get(i, b_floor)
        for i in d_map.keys() | b_map.keys()
    }
    return _top(fused, limit)


@dataclass(frozen=True, slots=True)
class WeightCurve:
    """The tuned dense weight and the metric at every weight tried."""

    best_weight: float
    best_score: float
    curve: tuple[tuple[float, float], ...]
    normalization: str
    metric: str = "ndcg@10"

    def to_dict(self) -> dict[str, object]:
        return {
            "best_weight": self.best_weight,
            "best_score": round(self.best_score, 6),
            "normalization": self.normalization,
            "metric": self.metric,
            "curve": [[w, round(s, 6)] for w, s in self.curve],
        }


def tune_weight(
    candidates: Sequence[tuple[Ranked, Ranked]],
    relevant: Sequence[Sequence[int]],
    *,
    normalization: Normalization = DEFAULT_NORMALIZATION,
    weights: Sequence[float] | None = None,
    metric: Callable[[Sequence[int], Sequence[int]], float] | None = None,
) -> WeightCurve:
    """The dense weight that maximizes the mean metric (nDCG@10 by default) of
    :func:`convex` over a labelled set.

    ``candidates[i]`` is query ``i``'s ``(dense, bm25)`` results (retrieve them once, with
    the candidate depth the retriever will use); ``relevant[i]`` its relevant chunk ids.
    ``weights`` defaults to 0, 0.05, ..., 1. Ties go to the weight nearest 0.5 (the least
    extreme), so a flat curve does not pick an edge.
    """
    from conveyor.rag.evaluation import ndcg_at_k

    if len(candidates) != len(relevant) or not candidates:
        raise InvalidInputError(
            f"{len(candidates)} candidate pairs for {len(relevant)} relevance lists "
            "(one of each per query, at least one)",
            field="candidates",
        )
    grid = list(weights) if weights is not None else [round(i * 0.05, 2) for i in range(21)]
    if not grid or any(not 0.0 <= w <= 1.0 for w in grid):
        raise InvalidInputError("weights must be in [0, 1]", field="weights")
    score_fn = metric or (lambda ranked, rel: ndcg_at_k(ranked, rel, 10))
    curve: list[tuple[float, float]] = []
    for w in grid:
        total = 0.0
        for (dense, bm25), rel in zip(candidates, relevant, strict=True):
            _, ids = convex(dense, bm25, weight=w, normalization=normalization, limit=10)
            total += score_fn(ids.tolist(), rel)
        curve.append((w, total / len(candidates)))
    best_w, best_s = max(curve, key=lambda ws: (round(ws[1], 12), -abs(ws[0] - 0.5)))
    return WeightCurve(best_w, best_s, tuple(curve), normalization)
