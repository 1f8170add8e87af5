"""Retrieval metrics, labelled sets and the nDCG gate (conveyor.rag.evaluation)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import pytest

from conveyor.checks import run_gates
from conveyor.errors import GateFailedError, InvalidInputError, NotFoundError
from conveyor.rag.evaluation import (
    EvalResult,
    LabelledQuery,
    evaluate,
    load_queries,
    mrr,
    ndcg_at_k,
    ndcg_gate,
    ndcg_not_lower,
    recall_at_k,
)


def test_metrics_by_hand() -> None:
    ranked = [5, 3, 9, 1, 7]
    # relevant at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(ranked, {3, 1}) == pytest.approx(expected)
    assert ndcg_at_k(ranked, {5}) == 1.0
    assert ndcg_at_k(ranked, {42}) == 0.0
    assert ndcg_at_k(ranked, {1}, k=3) == 0.0
    assert recall_at_k(ranked, {3, 1, 42}, k=4) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, {3, 1, 42}, k=1) == 0.0
    assert mrr(ranked, {9, 7}) == pytest.approx(1 / 3)
    assert mrr(ranked, {7}, k=4) == 0.0
    # a document's later chunks do not count again (ranked by document id)
    assert ndcg_at_k(["a", "a", "b"], {"b"}) == pytest.approx(1 / math.log2(3))


def test_evaluate_averages_and_times() -> None:
    rankings = {"q1": [1, 2, 3], "q2": [4, 5, 6]}

    def run(query: str) -> tuple[Sequence[Hashable], Mapping[str, float]]:
        return rankings[query], {"dense": 1.5, "bm25": 0.5}

    result = evaluate(run, [LabelledQuery("q1", (1,)), LabelledQuery("q2", (6,))], k=2)
    assert result.ndcg_at_10 == pytest.approx((1.0 + 0.5) / 2)
    assert result.recall_at_k == pytest.approx(0.5)  # q2's relevant id is at rank 3 > k
    assert result.mrr == pytest.approx(0.5)
    assert result.latency_ms["dense"]["median"] == 1.5
    assert set(result.latency_ms) == {"dense", "bm25", "total"}
    assert result.to_dict()["recall@2"] == 0.5
    with pytest.raises(InvalidInputError):
        evaluate(run, [])


def test_jsonl_sets(tmp_path: Path) -> None:
    good = tmp_path / "set.jsonl"
    good.write_text(
        '{"query": "how to compute a mean", "relevant": [3, 4]}\n\n'
        '{"query": "pca", "relevant": ["docs/pca.md"]}\n'
    )
    queries = load_queries(good)
    assert queries == [
        LabelledQuery("how to compute a mean", (3, 4)),
        LabelledQuery("pca", ("docs/pca.md",)),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "ok", "relevant": [1]}\n{"query": "no ids", "relevant": []}\n')
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:2"):
        load_queries(bad)
    bad.write_text('{"query": "x", "relevant": [1.5]}\n')
    with pytest.raises(InvalidInputError, match="list of ids"):
        load_queries(bad)
    bad.write_text("not json\n")
    with pytest.raises(InvalidInputError, match="not JSON"):
        load_queries(bad)
    with pytest.raises(NotFoundError):
        load_queries(tmp_path / "missing.jsonl")


def result(ndcg: float) -> EvalResult:
    return EvalResult(n_queries=10, k=10, ndcg_at_10=ndcg, recall_at_k=0.9, mrr=0.7)


def test_gate_passes_an_equal_version_and_refuses_a_worse_one() -> None:
    base = result(0.70)
    equal = ndcg_gate(result(0.70), base, tolerance=0.01, subject="rag:docs", subject_version="4")
    assert equal.passed and equal.verdict == "passed"
    assert equal.kind == "gate" and equal.subject == "rag:docs" and equal.subject_version == "4"
    assert ndcg_gate(result(0.695), base, tolerance=0.01).passed  # within the tolerance
    worse = ndcg_gate(result(0.68), base, tolerance=0.01, subject="rag:docs")
    assert not worse.passed
    check = worse.failures[0]
    assert check.name == "rag.ndcg@10"
    assert check.observed == pytest.approx(0.68)
    assert check.threshold == {"baseline": 0.7, "tolerance": 0.01}
    assert "below" in check.detail
    with pytest.raises(GateFailedError, match=r"rag\.ndcg@10"):
        worse.raise_for_failure()


def test_gate_without_baseline_warns_and_composes_with_run_gates() -> None:
    first = ndcg_gate(0.5, None)
    assert first.passed and first.verdict == "passed with warnings"
    report = run_gates("rag:docs", [ndcg_not_lower(0.8, tolerance=0.0)], 0.79)
    assert not report.passed
    with pytest.raises(InvalidInputError):
        ndcg_not_lower(0.8, tolerance=-0.1)
