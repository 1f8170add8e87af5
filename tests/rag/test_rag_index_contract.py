"""One contract, every vector index backend: exact, hnsw, ivf, ivfpq, and pgvector (HNSW and
IVFFlat) on the real PostgreSQL.

Small clustered data (2,000 x 32, 20 clusters) so the approximate indexes have structure to
find; each is compared with exact search on the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.backends import BackendURL
from conveyor.errors import ClosedError, InvalidInputError
from conveyor.rag.index import INDEX
from conveyor.rag.types import VectorIndex

DIM = 32
N = 2_000

#: backend -> URL (postgresql's is completed with the test's own schema).
URLS = {
    "exact": "exact://",
    "hnsw": "hnsw://?m=16&ef_construction=100&ef_search=64",
    "hnsw-sq8": "hnsw://?m=16&ef_construction=100&ef_search=64&storage=sq8",
    "ivf": "ivf://?nlist=16&nprobe=8",
    "ivfpq": "ivfpq://?nlist=16&m=8&nbits=4&nprobe=8&rerank=10",
    "pg-hnsw": "?index=hnsw&m=16&ef_construction=64&ef_search=100",
    "pg-ivfflat": "?index=ivfflat&lists=10&probes=10",
}
BACKENDS = [
    pytest.param(name, id=name, marks=[pytest.mark.postgres] if name.startswith("pg-") else [])
    for name in URLS
]


def _normalize(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _one_faiss_thread() -> Iterator[None]:
    """faiss's OpenMP threads spin while waiting: on a 2-core machine shared with other test
    workers, training on a few thousand rows took seconds instead of milliseconds."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, DIM))
    labels = rng.integers(0, 20, N + 50)
    rows = _normalize(centres[labels] + 0.6 * rng.standard_normal((N + 50, DIM)))
    ids = rng.choice(10**9, size=N, replace=False).astype(np.int64)
    return {"ids": ids, "vectors": rows[:N], "queries": rows[N:]}


@pytest.fixture(params=BACKENDS)
def index_url(request: pytest.FixtureRequest) -> Iterator[str]:
    name = request.param
    if not name.startswith("pg-"):
        yield URLS[name]
        return
    pg_url = request.getfixturevalue("pg_url")
    parsed = BackendURL.parse(pg_url)
    extra = BackendURL.parse("x://" + URLS[name]).query
    yield parsed.with_(query={**parsed.query, **extra}).render(hide_password=False)


def open_index(url: str, dimension: int = DIM, namespace: str = "docs_v1") -> Any:
    return INDEX.open(url, dimension=dimension, namespace=namespace)


def reload(index: Any, url: str, folder: Path, dimension: int = DIM) -> Any:
    """Save, close, and load the index again (a database index reconnects)."""
    index.save(folder)
    index.close()
    return INDEX.resolve(url).load(
        BackendURL.parse(url), folder, dimension=dimension, namespace="docs_v1"
    )


@pytest.fixture
def filled(index_url: str, data: dict[str, np.ndarray]) -> Iterator[Any]:
    index = open_index(index_url)
    index.add(data["ids"], data["vectors"])
    yield index
    index.close()


@pytest.fixture(scope="module")
def reference(data: dict[str, np.ndarray]) -> Iterator[Any]:
    index = open_index("exact://")
    index.add(data["ids"], data["vectors"])
    yield index
    index.close()


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(
        len(set(f.tolist()) & set(t.tolist()) - {-1}) for f, t in zip(found, truth, strict=True)
    )
    return hits / int((truth >= 0).sum())


def test_an_index_is_a_vector_index(filled: Any) -> None:
    assert isinstance(filled, VectorIndex)
    assert filled.dimension == DIM
    assert len(filled) == N
    params = filled.params()
    assert params["dimension"] == DIM
    assert params["count"] == N
    assert params["kind"] in ("exact", "hnsw", "ivf", "ivfpq", "postgresql")


def test_search_finds_what_exact_search_finds(
    filled: Any, reference: Any, data: dict[str, np.ndarray]
) -> None:
    queries = data["queries"]
    scores, ids = filled.search(queries, 10)
    _, true_ids = reference.search(queries, 10)
    assert ids.shape == scores.shape == (len(queries), 10)
    assert ids.dtype == np.int64
    assert scores.dtype == np.float32
    assert recall(ids, true_ids) >= 0.9
    assert (np.diff(scores, axis=1) <= 1e-5).all()  # best first
    # Scores are cosine similarities of the ids returned.
    by_id = dict(zip(data["ids"].tolist(), data["vectors"], strict=True))
    for q, row_ids, row_scores in zip(queries, ids, scores, strict=True):
        expected = [float(by_id[i] @ q) for i in row_ids.tolist()]
        np.testing.assert_allclose(row_scores, expected, atol=1e-4)


def test_an_empty_index_returns_no_results(index_url: str, data: dict[str, np.ndarray]) -> None:
    with open_index(index_url) as index:
        assert len(index) == 0
        scores, ids = index.search(data["queries"][:3], 5)
        assert ids.shape == (3, 5)
        assert (ids == -1).all()
        assert np.isneginf(scores).all()


def test_k_larger_than_the_index_pads_with_minus_one(
    index_url: str, data: dict[str, np.ndarray]
) -> None:
    with open_index(index_url) as index:
        index.add(data["ids"][:7], data["vectors"][:7])
        scores, ids = index.search(data["queries"][:2], 12)
        assert ids.shape == (2, 12)
        for row_ids, row_scores in zip(ids, scores, strict=True):
            assert sorted(row_ids[:7].tolist()) == sorted(data["ids"][:7].tolist())
            assert (row_ids[7:] == -1).all()
            assert np.isneginf(row_scores[7:]).all()
            assert np.isfinite(row_scores[:7]).all()


def test_a_removed_id_is_never_returned(filled: Any, data: dict[str, np.ndarray]) -> None:
    queries = data["queries"][:10]
    _, before = filled.search(queries, 5)
    gone = np.unique(before[:, :3])
    assert filled.remove(gone) == len(gone)
    assert filled.remove(gone) == 0  # already absent
    assert len(filled) == N - len(gone)
    _, after = filled.search(queries, 10)
    assert not np.isin(after, gone).any()
    assert (after >= 0).all()  # the rest still fills k
    _, everything = filled.search(queries[:1], N)
    assert not np.isin(everything, gone).any()


def test_adding_an_id_again_replaces_its_vector(filled: Any, data: dict[str, np.ndarray]) -> None:
    target = data["ids"][:1]
    query = data["queries"][:1]
    filled.add(target, query)  # the query itself, under an existing id
    assert len(filled) == N
    scores, ids = filled.search(query, 3)
    assert ids[0, 0] == target[0]
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-4)


def test_a_selective_filter_returns_exact_results_among_the_allowed(
    filled: Any, reference: Any, data: dict[str, np.ndarray]
) -> None:
    allowed = data["ids"][::97]  # 21 ids
    absent = np.array([10**12, 10**12 + 1], dtype=np.int64)  # ids the index never had
    queries = data["queries"]
    _, ids = filled.search(queries, 5, allowed=np.concatenate([allowed, absent]))
    _, truth = reference.search(queries, 5, allowed=allowed)
    assert np.isin(ids, allowed).all()
    assert recall(ids, truth) >= 0.95


def test_a_broad_filter_returns_only_allowed_ids(
    filled: Any, reference: Any, data: dict[str, np.ndarray]
) -> None:
    if hasattr(filled, "selective"):
        filled.selective = 0  # force the approximate path (faiss's selector in the graph)
    allowed = data["ids"][: N // 2]
    queries = data["queries"]
    _, ids = filled.search(queries, 10, allowed=allowed)
    _, truth = reference.search(queries, 10, allowed=allowed)
    assert (ids >= 0).all()
    assert np.isin(ids, allowed).all()
    assert recall(ids, truth) >= 0.9


def test_an_empty_filter_returns_nothing(filled: Any, data: dict[str, np.ndarray]) -> None:
    _, ids = filled.search(data["queries"][:2], 4, allowed=np.array([], dtype=np.int64))
    assert (ids == -1).all()


def test_a_save_load_round_trip_answers_identically(
    index_url: str, data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    index = open_index(index_url)
    index.add(data["ids"], data["vectors"])
    removed = data["ids"][:50]
    index.remove(removed)
    queries = data["queries"]
    scores, ids = index.search(queries, 10)
    params = index.params()
    again = reload(index, index_url, tmp_path)
    try:
        assert len(again) == N - 50
        scores2, ids2 = again.search(queries, 10)
        np.testing.assert_array_equal(ids2, ids)
        np.testing.assert_allclose(scores2, scores, atol=1e-6)
        _, everything = again.search(queries[:1], N)
        assert not np.isin(everything, removed).any()  # the removal was persisted
        for key in ("kind", "dimension", "count"):
            assert again.params()[key] == params[key]
    finally:
        again.close()


def test_a_dimension_mismatch_names_both_numbers(
    filled: Any, index_url: str, data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    wrong = np.ones((2, DIM + 4), dtype=np.float32)
    with pytest.raises(InvalidInputError, match=rf"dimension {DIM + 4}.*dimension {DIM}"):
        filled.add(np.array([1, 2], dtype=np.int64), wrong)
    with pytest.raises(InvalidInputError, match=rf"dimension {DIM + 4}.*dimension {DIM}"):
        filled.search(wrong, 3)
    filled.save(tmp_path)
    with pytest.raises(InvalidInputError, match=rf"dimension {DIM}.*dimension {DIM + 4}"):
        INDEX.resolve(index_url).load(
            BackendURL.parse(index_url), tmp_path, dimension=DIM + 4, namespace="docs_v1"
        )


def test_bad_ids_and_values_are_refused(filled: Any, data: dict[str, np.ndarray]) -> None:
    vectors = data["vectors"][:2]
    with pytest.raises(InvalidInputError, match="ids must be >= 0"):
        filled.add(np.array([-1, 3]), vectors)
    with pytest.raises(InvalidInputError, match="distinct"):
        filled.add(np.array([3, 3]), vectors)
    with pytest.raises(InvalidInputError, match="2 ids for 1 vectors"):
        filled.add(np.array([3, 4]), vectors[:1])
    with pytest.raises(InvalidInputError, match="NaN"):
        filled.add(np.array([3, 4]), np.full((2, DIM), np.nan, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        filled.search(data["queries"][:1], 0)
    assert len(filled) == N


def test_a_closed_index_refuses_use(index_url: str, data: dict[str, np.ndarray]) -> None:
    index = open_index(index_url)
    index.close()
    index.close()  # idempotent
    with pytest.raises(ClosedError):
        index.search(data["queries"][:1], 1)
