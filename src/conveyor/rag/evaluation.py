"""Retrieval quality on a labelled query set: nDCG@10, recall@k, MRR and per-stage latency,
and the gate that refuses a collection version (or a retrieval setting) that ranks worse.

A labelled set is a list of :class:`LabelledQuery` (a query and the ids of its relevant
chunks or documents). It is the built-in docstring set (:mod:`conveyor.rag.known_items`) or
a user's JSONL file, one ``{"query": "...", "relevant": [ids]}`` object a line
(:func:`load_queries`). Integer ids are chunk ids; string ids are document ids, matched
against each hit's ``doc_id`` (a document counts once, at its best-ranked chunk).

Relevance is binary. For a ranking ``r_1..r_n`` and relevant set ``R``:

- ``nDCG@k`` = ``sum(1/log2(i+1) for i <= k if r_i in R)`` divided by the same sum for an
  ideal ranking (``min(|R|, k)`` relevant items first);
- ``recall@k`` = ``|{r_1..r_k} & R| / |R|``;
- ``MRR@k`` = ``1/i`` for the first relevant ``r_i`` with ``i <= k``, else 0.

The gate (:func:`ndcg_gate`) holds a candidate's mean nDCG@10 to the baseline's less a
tolerance and answers with the project's :class:`~conveyor.checks.Report`, so a rebuilt
index is promoted or refused the way a model is.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.checks.result import CheckResult, Report
from conveyor.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from conveyor.rag.types import Hit

__all__ = [
    "EvalResult",
    "LabelledQuery",
    "RunFn",
    "evaluate",
    "hits_run",
    "load_queries",
    "mrr",
    "ndcg_at_k",
    "ndcg_gate",
    "ndcg_not_lower",
    "recall_at_k",
]

#: What :func:`evaluate` calls: a query to its ranked ids (best first) and the latency of
#: each stage in milliseconds (empty when the caller does not time stages).
RunFn = Callable[[str], tuple[Sequence[Hashable], Mapping[str, float]]]

GATE_REPORT_KIND = "gate"


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    """A query and the ids relevant to it (chunk ids as ints, document ids as strings)."""

    query: str
    relevant: tuple[int | str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.query, str) or not self.query.strip():
            raise InvalidInputError("a labelled query needs a non-empty query", field="query")
        if not self.relevant:
            raise InvalidInputError(
                f"query {self.query[:60]!r} has no relevant ids", field="relevant"
            )


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int = 10) -> float:
    """Binary-relevance nDCG@k of one ranking (1.0 = every relevant id at the top)."""
    rel = set(relevant)
    if not rel:
        raise InvalidInputError("nDCG needs at least one relevant id", field="relevant")
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(_dedup(ranked)[:k]) if r in rel)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(rel), k)))
    return dcg / ideal


def recall_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int = 10) -> float:
    """The share of the relevant ids found in the first ``k``."""
    rel = set(relevant)
    if not rel:
        raise InvalidInputError("recall needs at least one relevant id", field="relevant")
    return len(rel.intersection(_dedup(ranked)[:k])) / len(rel)


def mrr(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int = 10) -> float:
    """Reciprocal rank of the first relevant id within the first ``k`` (0 when none)."""
    rel = set(relevant)
    for i, r in enumerate(_dedup(ranked)[:k]):
        if r in rel:
            return 1.0 / (i + 1)
    return 0.0


def _dedup(ranked: Sequence[Hashable]) -> list[Hashable]:
    """First occurrence of each id (a document's later chunks do not count again)."""
    seen: set[Hashable] = set()
    out: list[Hashable] = []
    for r in ranked:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Mean metrics over a query set, and per-stage latency (median and p95, ms)."""

    n_queries: int
    k: int
    ndcg_at_10: float
    recall_at_k: float
    mrr: float
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    per_query_ndcg: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_queries": self.n_queries,
            "k": self.k,
            "ndcg@10": round(self.ndcg_at_10, 4),
            f"recall@{self.k}": round(self.recall_at_k, 4),
            "mrr": round(self.mrr, 4),
            "latency_ms": self.latency_ms,
        }


def evaluate(run: RunFn, queries: Sequence[LabelledQuery], *, k: int = 10) -> EvalResult:
    """Run every query through ``run`` and average the metrics.

    ``k`` is the recall and MRR cut-off (nDCG is always at 10). The ``total`` latency is
    measured here, around ``run``; the stages are what ``run`` reports.
    """
    if not queries:
        raise InvalidInputError("the query set is empty", field="queries")
    if k < 1:
        raise InvalidInputError(f"k must be positive, got {k}", field="k")
    ndcgs: list[float] = []
    recalls: list[float] = []
    rrs: list[float] = []
    stages: dict[str, list[float]] = {}
    for q in queries:
        t0 = time.perf_counter()
        ranked, latencies = run(q.query)
        total = (time.perf_counter() - t0) * 1000.0
        for stage, ms in latencies.items():
            stages.setdefault(stage, []).append(float(ms))
        stages.setdefault("total", []).append(total)
        ndcgs.append(ndcg_at_k(ranked, q.relevant, 10))
        recalls.append(recall_at_k(ranked, q.relevant, k))
        rrs.append(mrr(ranked, q.relevant, k))
    return EvalResult(
        n_queries=len(queries),
        k=k,
        ndcg_at_10=statistics.fmean(ndcgs),
        recall_at_k=statistics.fmean(recalls),
        mrr=statistics.fmean(rrs),
        latency_ms={name: _summary(values) for name, values in stages.items()},
        per_query_ndcg=tuple(ndcgs),
    )


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"median": round(statistics.median(ordered), 3), "p95": round(p95, 3)}


def hits_run(
    search: Callable[[str], tuple[Sequence[Hit], Mapping[str, float]]], *, by: str = "chunk"
) -> RunFn:
    """Adapt a search returning :class:`~conveyor.rag.types.Hit` objects to :data:`RunFn`:
    ``by="chunk"`` ranks chunk ids, ``by="doc"`` document ids."""
    if by not in ("chunk", "doc"):
        raise InvalidInputError(f"by must be 'chunk' or 'doc', got {by!r}", field="by")

    def run(query: str) -> tuple[Sequence[Hashable], Mapping[str, float]]:
        hits, latencies = search(query)
        ids: list[Hashable] = [h.chunk_id if by == "chunk" else h.doc_id for h in hits]
        return ids, latencies

    return run


def load_queries(path: str | Path) -> list[LabelledQuery]:
    """A user's labelled set: JSONL, one ``{"query": str, "relevant": [ids]}`` a line
    (blank lines skipped). A malformed line is an error naming its number."""
    file = Path(path)
    if not file.is_file():
        raise NotFoundError(f"no labelled query file at {file}", path=str(file))
    out: list[LabelledQuery] = []
    with file.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(
                    f"{file}:{number}: not JSON ({exc.msg})", path=str(file), line=number
                ) from exc
            if not isinstance(row, dict) or set(row) - {"query", "relevant", "id"}:
                raise InvalidInputError(
                    f"{file}:{number}: expected an object with 'query' and 'relevant'",
                    path=str(file),
                    line=number,
                )
            relevant = row.get("relevant")
            if not isinstance(relevant, list) or not all(
                isinstance(r, int | str) and not isinstance(r, bool) for r in relevant
            ):
                raise InvalidInputError(
                    f"{file}:{number}: 'relevant' must be a list of ids (ints or strings)",
                    path=str(file),
                    line=number,
                )
            try:
                out.append(LabelledQuery(row.get("query", ""), tuple(relevant)))
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"{file}:{number}: {exc.message}", path=str(file), line=number
                ) from exc
    if not out:
        raise InvalidInputError(f"{file} holds no labelled query", path=str(file))
    return out


def ndcg_not_lower(
    baseline: EvalResult | float | None, *, tolerance: float = 0.01
) -> Callable[[EvalResult | float], CheckResult]:
    """A gate (for :func:`conveyor.checks.run_gates`): the candidate's nDCG@10 must be at
    least the baseline's minus ``tolerance``. Without a baseline (a first version) the
    check passes as a warning saying so."""
    if not 0.0 <= tolerance < 1.0:
        raise InvalidInputError(f"tolerance must be in [0, 1), got {tolerance}", field="tolerance")
    base = baseline.ndcg_at_10 if isinstance(baseline, EvalResult) else baseline

    def rag_ndcg_gate(candidate: EvalResult | float) -> CheckResult:
        observed = candidate.ndcg_at_10 if isinstance(candidate, EvalResult) else candidate
        if base is None:
            return CheckResult(
                name="rag.ndcg@10",
                passed=False,
                observed=observed,
                threshold=None,
                detail=f"nDCG@10 {observed:.4f}: no baseline version to compare with",
                severity="warning",
            )
        bound = base - tolerance
        passed = observed >= bound
        verdict = "within" if passed else "below"
        return CheckResult(
            name="rag.ndcg@10",
            passed=passed,
            observed=round(observed, 6),
            threshold={"baseline": round(base, 6), "tolerance": tolerance},
            detail=(
                f"nDCG@10 {observed:.4f} against the baseline's {base:.4f}: "
                f"{verdict} the tolerance {tolerance:g} (needs >= {bound:.4f})"
            ),
        )

    return rag_ndcg_gate


def ndcg_gate(
    candidate: EvalResult | float,
    baseline: EvalResult | float | None,
    *,
    tolerance: float = 0.01,
    subject: str = "rag",
    subject_version: str | None = None,
) -> Report:
    """The gate report of a candidate collection version (or retrieval setting):
    ``report.passed`` is False when its nDCG@10 falls more than ``tolerance`` below the
    baseline's; ``report.raise_for_failure()`` raises :class:`~conveyor.errors.GateFailedError`.
    ``subject`` is ``rag:<collection>`` by convention."""
    from conveyor.checks.gates import run_gates

    return run_gates(
        subject,
        [ndcg_not_lower(baseline, tolerance=tolerance)],
        candidate,
        kind=GATE_REPORT_KIND,
        subject_version=subject_version,
    )
