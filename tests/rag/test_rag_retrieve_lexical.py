"""BM25 over chunk ids (conveyor.rag.lexical): ranking, filters, deletion, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conveyor.errors import ConfigError, InvalidInputError, NotFoundError
from conveyor.rag.lexical import BM25Index, analyze, stem

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Compute the arithmetic mean along the specified axis.",
    "Singular value decomposition of a matrix, computed with LAPACK.",
    "A fox and a dog walked into the forest together.",
    "Kernel density estimation using Gaussian kernels.",
    "Standardize features by removing the mean and scaling to unit variance.",
]
IDS = [101, 205, 307, 412, 518, 623]


@pytest.fixture(scope="module")
def index() -> BM25Index:
    return BM25Index.build(IDS, TEXTS)


def test_exact_term_document_ranks_first(index: BM25Index) -> None:
    scores, ids = index.search("singular value decomposition", 3)
    assert ids[0] == 307
    assert scores[0] > 0
    # only one document holds these terms: the rest is padding
    assert ids[1:].tolist() == [-1, -1]
    assert np.isneginf(scores[1:]).all()
    assert ids.dtype == np.int64


def test_stemming_matches_inflections(index: BM25Index) -> None:
    # "kernels" in the text, "kernel" in the query; "computing" against "computed"
    assert index.search("kernel", 1)[1][0] == 518
    assert stem("samples") == stem("sample")
    assert stem("fitted") == stem("fit")
    assert "the" not in analyze("the mean of the array")


def test_allowed_restricts_the_result(index: BM25Index) -> None:
    _, ids = index.search("fox dog", 5)
    assert set(ids[ids >= 0].tolist()) == {101, 412}
    _, ids = index.search("fox dog", 5, allowed=np.array([412, 623], dtype=np.int64))
    assert ids[0] == 412
    assert ids[1:].tolist() == [-1] * 4
    # an allowed set that matches nothing gives nothing, never a disallowed chunk
    _, ids = index.search("fox dog", 5, allowed=[205])
    assert (ids == -1).all()


def test_unknown_terms_match_nothing(index: BM25Index) -> None:
    scores, ids = index.search("zzyzx qwertyuiop", 4)
    assert (ids == -1).all() and np.isneginf(scores).all()


def test_remove_save_and_load(index: BM25Index, tmp_path: Path) -> None:
    own = BM25Index.build(IDS, TEXTS)
    assert own.remove([101, 999]) == 1
    assert len(own) == 5
    _, ids = own.search("fox", 5)
    assert 101 not in ids.tolist() and ids[0] == 412
    own.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    assert len(loaded) == 5
    for query in ("fox", "mean", "matrix decomposition"):
        a, b = own.search(query, 4), loaded.search(query, 4)
        assert a[1].tolist() == b[1].tolist()
        np.testing.assert_allclose(a[0], b[0])
    assert loaded.params()["analyzer"] == "stem"


def test_bad_input_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="one id per text"):
        BM25Index.build([1, 2], ["a"])
    with pytest.raises(InvalidInputError, match="unique"):
        BM25Index.build([1, 1], ["a b", "c d"])
    with pytest.raises(ConfigError, match="unknown BM25 analyzer"):
        BM25Index.build([1], ["text"], analyzer="snowball")
    with pytest.raises(NotFoundError):
        BM25Index.load(tmp_path / "nothing")
    with pytest.raises(InvalidInputError):
        BM25Index.build([1], ["text here"]).search("text", 0)


def test_equal_scores_at_the_cut_go_by_id() -> None:
    """'Equal scores by id' holds at the k-th place too: of 40 chunks with the same score,
    k=5 returns the 5 smallest ids, whatever their rows (ids here descend with the rows)."""
    texts = ["alpha beta"] * 40 + ["gamma delta"] * 60
    ids = np.arange(1000, 900, -1)
    bm25 = BM25Index.build(ids, texts)
    scores, found = bm25.search("alpha", 5)
    assert found.tolist() == [961, 962, 963, 964, 965]
    assert len(set(scores.tolist())) == 1
    _, found = bm25.search("alpha", 5, allowed=ids[::2])
    assert found.tolist() == [962, 964, 966, 968, 970]
    bm25.remove([961, 963])
    assert bm25.search("alpha", 3)[1].tolist() == [962, 964, 965]
