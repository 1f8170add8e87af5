"""Fusion math on hand-computed cases (conveyor.rag.fusion)."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor.errors import InvalidInputError
from conveyor.rag.fusion import convex, normalize, rrf, tune_weight


def ranked(ids: list[int], scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(scores, dtype=np.float32), np.array(ids, dtype=np.int64)


def test_rrf_matches_the_formula() -> None:
    a = ranked([1, 2, 3, -1], [0.9, 0.8, 0.7, -np.inf])
    b = ranked([3, 1, 4], [12.0, 5.0, 1.0])
    scores, ids = rrf({"dense": a, "bm25": b}, k=60)
    expected = {
        1: 1 / 61 + 1 / 62,
        2: 1 / 62,
        3: 1 / 63 + 1 / 61,
        4: 1 / 63,
    }
    assert ids.tolist() == [1, 3, 2, 4]  # 1/61+1/62 > 1/61+1/63
    for i, s in zip(ids.tolist(), scores.tolist(), strict=True):
        assert s == pytest.approx(expected[i], rel=1e-6)
    assert rrf({"dense": a, "bm25": b}, limit=2)[1].tolist() == [1, 3]


def test_normalizations() -> None:
    np.testing.assert_allclose(normalize(np.array([2.0, 4.0, 6.0])), [0.0, 0.5, 1.0])
    z = normalize(np.array([2.0, 4.0, 6.0]), "zscore")
    np.testing.assert_allclose(z, [-1.224744871, 0.0, 1.224744871], rtol=1e-6)
    np.testing.assert_allclose(normalize(np.array([3.0, 3.0])), [1.0, 1.0])
    with pytest.raises(InvalidInputError):
        normalize(np.array([1.0]), "rank")  # type: ignore[arg-type]


def test_convex_by_hand() -> None:
    dense = ranked([1, 2, 3], [0.9, 0.5, 0.1])  # minmax: 1, .5, 0
    bm25 = ranked([3, 4], [10.0, 2.0])  # minmax: 1, 0
    scores, ids = convex(dense, bm25, weight=0.5, normalization="minmax")
    # absent from a list -> that list's lowest normalized value (0 here)
    expected = {1: 0.5 * 1 + 0.5 * 0, 2: 0.5 * 0.5 + 0, 3: 0.5 * 0 + 0.5 * 1, 4: 0.0}
    got = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    assert got == pytest.approx(expected)
    # 1 and 3 tie at 0.5: the smaller id first
    assert ids.tolist()[:2] == [1, 3]
    assert convex(dense, bm25, weight=1.0)[1].tolist()[0] == 1
    assert convex(dense, bm25, weight=0.0)[1].tolist()[0] == 3
    # z-score: dense (.9, .5, .1) -> (1.2247, 0, -1.2247); bm25 (10, 2) -> (1, -1)
    zs, zi = convex(dense, bm25, weight=0.25, normalization="zscore")
    z = 1.224744871
    expected_z = {
        1: 0.25 * z + 0.75 * -1,
        2: 0.0 + 0.75 * -1,
        3: 0.25 * -z + 0.75 * 1,
        4: 0.25 * -z + 0.75 * -1,
    }
    assert dict(zip(zi.tolist(), zs.tolist(), strict=True)) == pytest.approx(expected_z, rel=1e-6)
    assert zi.tolist() == [3, 1, 2, 4]
    with pytest.raises(InvalidInputError, match="weight"):
        convex(dense, bm25, weight=1.5)


def test_tune_weight_picks_the_better_weight() -> None:
    # three queries where BM25 ranks the relevant chunk (7) first and dense ranks it last;
    # one where dense is right by a small margin. Leaning on BM25 must win.
    cases = []
    relevant = []
    for _ in range(3):
        dense = ranked([1, 2, 7], [0.9, 0.8, 0.1])
        bm25 = ranked([7, 1, 2], [9.0, 1.0, 0.5])
        cases.append((dense, bm25))
        relevant.append([7])
    cases.append((ranked([5, 6], [0.9, 0.2]), ranked([6, 5], [3.0, 2.9])))
    relevant.append([5])
    curve = tune_weight(
        cases, relevant, weights=[0.0, 0.25, 0.5, 0.75, 1.0], normalization="minmax"
    )
    assert curve.best_weight <= 0.5
    by_weight = dict(curve.curve)
    assert by_weight[1.0] < by_weight[curve.best_weight]
    assert curve.best_score == pytest.approx(max(by_weight.values()))
    assert curve.to_dict()["normalization"] == "minmax"
    # the mirror image (dense right, BM25 wrong) picks a dense-leaning weight
    mirrored = [(b, d) for d, b in cases[:3]]
    mirror = tune_weight(mirrored, relevant[:3], weights=[0.0, 0.5, 1.0])
    assert mirror.normalization == "zscore"
    assert mirror.best_weight >= 0.5
    assert dict(mirror.curve)[0.0] < mirror.best_score


def test_tune_weight_refuses_mismatched_input() -> None:
    with pytest.raises(InvalidInputError):
        tune_weight([], [])
    with pytest.raises(InvalidInputError):
        tune_weight([(ranked([1], [1.0]), ranked([1], [1.0]))], [[1], [2]])
