"""Reranking: the seam, a cross-encoder for a local model, and the learned fusion used here.

A :class:`Reranker` rescores the fused top candidates of a query: ``rerank(query, texts)``
answers one score per text (higher is better). The retriever also passes the candidates'
stage scores (``candidates=``), which a reranker may use or ignore.

Which reranker ships, and why (measured in ``benchmarks/rag_quality.py``, written up in
``docs/rag/retrieval.md``):

- **No cross-encoder model installs here.** The models are on a hub, which this platform
  cannot reach at run time; no PyPI package was found that ships one's weights (names tried
  with ``pip index versions``: ``gt-ms-marco-minilm-l6-v2``, ``gt-ms-marco-minilm-l-6-v2``,
  ``gt-cross-encoder-ms-marco-minilm-l6-v2``, ``ms-marco-minilm-l6-v2``,
  ``gt-bge-reranker-base``; ``flashrank`` downloads its model at run time).
  :class:`CrossEncoderReranker` runs one from a local folder (sentence-transformers'
  ``CrossEncoder``) for a deployment that has one on disk.
- **The default is :class:`LearnedFusionReranker`**: a logistic regression over the
  candidates' stage features (the fused score, each stage's normalized score and
  reciprocal rank) trained on a labelled split that is never the reported one. On the
  docstring set it matches convex fusion (within 0.002 nDCG@10) rather than beating it:
  rescoring with the bi-encoder on the candidate's lead sentence, query-term coverage and
  a gradient-boosted model were tried on the dev split and did not help on the test split.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from conveyor.errors import ConfigError, InvalidInputError, NotFittedError, NotFoundError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "FEATURES",
    "Candidate",
    "CrossEncoderReranker",
    "LearnedFusionReranker",
    "Reranker",
    "candidate_features",
    "rerank_scores",
]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A fused candidate as the reranker sees it."""

    chunk_id: int
    text: str
    fused: float
    rank: int
    """0-based position in the fused list."""
    stage_scores: Mapping[str, float] = field(default_factory=dict)
    """The raw score of each stage that returned it (``dense``, ``bm25``)."""


@runtime_checkable
class Reranker(Protocol):
    """Rescores a query's candidates: one score per text, higher is better."""

    def rerank(
        self, query: str, texts: Sequence[str], *, candidates: Sequence[Candidate] | None = None
    ) -> NDArray[np.float32]: ...


def rerank_scores(reranker: Reranker, query: str, candidates: Sequence[Candidate]) -> list[float]:
    """The reranker's scores of ``candidates``, checked for length and finiteness."""
    scores = reranker.rerank(query, [c.text for c in candidates], candidates=candidates)
    out = [float(s) for s in scores]
    if len(out) != len(candidates):
        raise InvalidInputError(
            f"the reranker returned {len(out)} scores for {len(candidates)} candidates",
            field="rerank",
        )
    return [s if math.isfinite(s) else -math.inf for s in out]


class CrossEncoderReranker:
    """A cross-encoder (query and passage read together) from a local model folder,
    through sentence-transformers' ``CrossEncoder``; nothing is downloaded."""

    def __init__(self, model_dir: str | Path, *, batch_size: int = 32, device: str = "cpu") -> None:
        folder = Path(model_dir)
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"no cross-encoder model in {folder} (no config.json): the reranker loads a "
                "local folder only",
                path=str(folder),
            )
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:  # pragma: no cover - the rag extra brings it
            from conveyor.errors import MissingDependencyError

            raise MissingDependencyError(
                "the cross-encoder reranker needs sentence-transformers: "
                "pip install 'conveyor[rag]'"
            ) from exc
        self._model = CrossEncoder(str(folder), device=device, local_files_only=True)
        self._batch_size = batch_size

    def rerank(
        self, query: str, texts: Sequence[str], *, candidates: Sequence[Candidate] | None = None
    ) -> NDArray[np.float32]:
        import numpy as np

        if not texts:
            return np.zeros(0, dtype=np.float32)
        scores = self._model.predict(
            [(query, t) for t in texts], batch_size=self._batch_size, show_progress_bar=False
        )
        return np.asarray(scores, dtype=np.float32).ravel()


#: The learned reranker's features, in order.
FEATURES: tuple[str, ...] = (
    "fused",
    "dense_norm",
    "bm25_norm",
    "dense_rr",
    "bm25_rr",
)
_RR_K = 60.0


def candidate_features(candidates: Sequence[Candidate]) -> NDArray[np.float64]:
    """The :data:`FEATURES` of one query's candidates (``(n, len(FEATURES))``).

    Scores are min-max normalized over the candidates; a stage that did not return a
    candidate gives it the lowest normalized score and the rank after the last."""
    import numpy as np

    from conveyor.rag.fusion import normalize

    n = len(candidates)
    out = np.zeros((n, len(FEATURES)), dtype=np.float64)
    if n == 0:
        return out
    fused = np.array([c.fused for c in candidates], dtype=np.float64)
    out[:, 0] = normalize(fused, "minmax")
    for col, stage in ((1, "dense"), (2, "bm25")):
        raw = np.array([c.stage_scores.get(stage, np.nan) for c in candidates], dtype=np.float64)
        present = ~np.isnan(raw)
        norm = np.zeros(n)
        if present.any():
            norm[present] = normalize(raw[present], "minmax")
        out[:, col] = norm
        # reciprocal rank among the candidates by this stage's score
        order = np.argsort(-np.where(present, raw, -np.inf), kind="stable")
        ranks = np.empty(n)
        ranks[order] = np.arange(n)
        ranks[~present] = n
        out[:, col + 2] = 1.0 / (_RR_K + ranks)
    return out


class LearnedFusionReranker:
    """A logistic regression over :data:`FEATURES`, fitted on labelled candidates.

    Fit it with :meth:`fit` on a split that is not the one you report; store
    :meth:`to_dict` with the collection version and rebuild with :meth:`from_dict`."""

    def __init__(
        self,
        coef: Sequence[float] | None = None,
        intercept: float = 0.0,
        *,
        trained_on: Mapping[str, Any] | None = None,
    ) -> None:
        if coef is not None and len(coef) != len(FEATURES):
            raise InvalidInputError(
                f"{len(coef)} coefficients for {len(FEATURES)} features", field="coef"
            )
        self.coef_: tuple[float, ...] | None = tuple(float(c) for c in coef) if coef else None
        self.intercept_ = float(intercept)
        self.trained_on: dict[str, Any] = dict(trained_on or {})

    def fit(
        self, groups: Sequence[Sequence[Candidate]], relevant: Sequence[Sequence[int]]
    ) -> LearnedFusionReranker:
        """Learn from each query's candidates (``groups[i]``) and its relevant chunk ids.
        Queries whose relevant chunks are not among the candidates teach nothing and are
        skipped."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        if len(groups) != len(relevant) or not groups:
            raise InvalidInputError(
                f"{len(groups)} candidate groups for {len(relevant)} relevance lists",
                field="groups",
            )
        xs: list[NDArray[np.float64]] = []
        ys: list[NDArray[np.int64]] = []
        used = 0
        for cands, rel in zip(groups, relevant, strict=True):
            labels = np.array([c.chunk_id in set(rel) for c in cands], dtype=np.int64)
            if not labels.any() or labels.all():
                continue
            xs.append(candidate_features(cands))
            ys.append(labels)
            used += 1
        if used == 0:
            raise InvalidInputError(
                "no query has a relevant chunk among its candidates: nothing to learn from",
                field="relevant",
            )
        model = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
        model.fit(np.vstack(xs), np.concatenate(ys))
        self.coef_ = tuple(float(c) for c in model.coef_.ravel())
        self.intercept_ = float(model.intercept_.ravel()[0])
        self.trained_on = {"queries": used, "candidates": int(sum(len(y) for y in ys))}
        return self

    def rerank(
        self, query: str, texts: Sequence[str], *, candidates: Sequence[Candidate] | None = None
    ) -> NDArray[np.float32]:
        import numpy as np

        if self.coef_ is None:
            raise NotFittedError("the learned fusion reranker is not fitted: call fit() first")
        if candidates is None or len(candidates) != len(texts):
            raise InvalidInputError(
                "the learned fusion reranker scores the candidates' stage scores: pass "
                "candidates= (one per text)",
                field="candidates",
            )
        x = candidate_features(candidates)
        logits: NDArray[np.float32] = (x @ np.asarray(self.coef_) + self.intercept_).astype(
            np.float32
        )
        return logits

    def to_dict(self) -> dict[str, Any]:
        if self.coef_ is None:
            raise NotFittedError("the learned fusion reranker is not fitted: call fit() first")
        return {
            "kind": "learned-fusion",
            "features": list(FEATURES),
            "coef": list(self.coef_),
            "intercept": self.intercept_,
            "trained_on": self.trained_on,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearnedFusionReranker:
        if data.get("kind") != "learned-fusion" or list(data.get("features", ())) != list(FEATURES):
            raise ConfigError(
                "not a learned fusion reranker of these features "
                f"(kind {data.get('kind')!r}, features {data.get('features')!r})",
                field="reranker",
            )
        return cls(data["coef"], data["intercept"], trained_on=data.get("trained_on"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> LearnedFusionReranker:
        file = Path(path)
        if not file.is_file():
            raise NotFoundError(f"no reranker file at {file}", path=str(file))
        return cls.from_dict(json.loads(file.read_text()))
