"""The index seam's URLs: build parameters from the query, validated with clear errors; and the
behaviour particular to the embedded backends (IVF's training threshold, HNSW's filtered
search by oversampling, memory per vector in params())."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conveyor.backends import BackendURL
from conveyor.errors import InvalidInputError, NotFoundError, UnknownBackendError
from conveyor.rag.index import INDEX

DIM = 16


def _rows(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim))
    rows = centres[rng.integers(0, 8, n)] + 0.5 * rng.standard_normal((n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_the_seam_knows_every_scheme_and_defaults_to_hnsw() -> None:
    assert INDEX.schemes() == ["exact", "hnsw", "ivf", "ivfpq", "postgresql"]
    assert INDEX.default == "hnsw://"
    with pytest.raises(UnknownBackendError, match="known schemes: exact://"):
        INDEX.resolve("annoy://")


def test_build_parameters_come_from_the_url() -> None:
    with INDEX.open(
        "hnsw://?m=24&ef_construction=150&ef_search=80", dimension=DIM, namespace="a"
    ) as index:
        params = index.params()
        assert (params["m"], params["ef_construction"], params["ef_search"]) == (24, 150, 80)
        assert params["library"].startswith("faiss")
    with INDEX.open("ivfpq://?nlist=8&m=4&nbits=6&nprobe=3", dimension=DIM, namespace="a") as ix:
        params = ix.params()
        assert (params["nlist"], params["m"], params["nbits"], params["nprobe"]) == (8, 4, 6, 3)
        assert params["rerank"] == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("hnsw://?M=32", "unknown hnsw index option.*M.*known: ef_construction, ef_search, m"),
        ("hnsw://?m=abc", "m must be an integer >= 2, got 'abc'"),
        ("hnsw://?ef_search=0", "ef_search must be an integer >= 1"),
        ("hnsw://somehost/path", "embedded and takes no host or path"),
        ("hnsw://?storage=pq", "storage must be flat or sq8"),
        ("exact://?m=3", "unknown exact index option"),
        ("ivf://?m=8", "unknown ivf index option.*m"),
        ("ivf://?nlist=4&nprobe=8", "nprobe=8 is more than nlist=4"),
        ("ivfpq://?m=5", "m=5 must divide the dimension 16"),
        ("ivfpq://?m=4&nbits=20", "nbits must be 1..16"),
        ("ivfpq://?rerank=-1", "rerank must be an integer >= 0"),
    ],
)
def test_bad_build_parameters_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        INDEX.open(url, dimension=DIM, namespace="a")


@pytest.mark.parametrize("namespace", ["", "Docs", "1docs", "docs-v1", "a;drop table x", "x" * 49])
@pytest.mark.parametrize("url", ["exact://", "hnsw://", "ivf://"])
def test_a_namespace_must_be_an_identifier(url: str, namespace: str) -> None:
    with pytest.raises(InvalidInputError, match="namespace"):
        INDEX.open(url, dimension=DIM, namespace=namespace)


def test_a_dimension_must_be_positive() -> None:
    with pytest.raises(InvalidInputError, match="dimension must be a positive integer"):
        INDEX.open("exact://", dimension=0, namespace="a")


def test_loading_from_an_empty_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no saved vector index"):
        INDEX.resolve("hnsw://").load(
            BackendURL.parse("hnsw://"), tmp_path, dimension=DIM, namespace="a"
        )


def test_loading_another_kind_of_index_is_refused(tmp_path: Path) -> None:
    with INDEX.open("exact://", dimension=DIM, namespace="a") as index:
        index.add(np.arange(3), _rows(3))
        index.save(tmp_path)
    with pytest.raises(InvalidInputError, match="holds a exact index, not a hnsw one"):
        INDEX.resolve("hnsw://").load(
            BackendURL.parse("hnsw://"), tmp_path, dimension=DIM, namespace="a"
        )


def test_ivf_is_exact_until_it_has_enough_vectors_to_train() -> None:
    rows = _rows(400)
    ids = np.arange(400, dtype=np.int64)
    with INDEX.open("ivf://?nlist=8&nprobe=1", dimension=DIM, namespace="a") as index:
        assert index.train_size == 39 * 8
        index.add(ids[:300], rows[:300])
        assert not index.params()["trained"]
        with INDEX.open("exact://", dimension=DIM, namespace="a") as exact:
            exact.add(ids[:300], rows[:300])
            np.testing.assert_array_equal(
                index.search(rows[300:], 5)[1], exact.search(rows[300:], 5)[1]
            )
        index.add(ids[300:], rows[300:])  # crosses 312: trains on all 400
        params = index.params()
        assert params["trained"]
        assert len(index) == 400
        assert params["bytes_per_vector"] == 4 * DIM + 16
        # Each vector finds itself through the trained lists.
        assert (index.search(rows[:50], 1)[1][:, 0] == ids[:50]).mean() > 0.9


def test_ivfpq_reports_its_memory_per_vector_and_rerank_costs_the_float_copy() -> None:
    rows = _rows(700, seed=3)
    ids = np.arange(700, dtype=np.int64)
    url = "ivfpq://?nlist=8&m=4&nbits=4&nprobe=8"
    with INDEX.open(url, dimension=DIM, namespace="a") as plain:
        plain.add(ids, rows)
        params = plain.params()
        assert params["trained"]
        assert params["code_bytes_per_vector"] == 2  # 4 codes of 4 bits
        assert params["bytes_per_vector"] == 2 + 16
        assert params["index_bytes_per_vector"] > 2
        with pytest.raises(InvalidInputError, match="no float32 copy to re-rank from"):
            plain.set_rerank(4)
    with INDEX.open(url + "&rerank=4", dimension=DIM, namespace="a") as reranked:
        reranked.add(ids, rows)
        assert reranked.params()["bytes_per_vector"] == 2 + 16 + 4 * DIM + 8
        scores, found = reranked.search(rows[:20], 3)
        # Re-ranked scores are exact inner products.
        for q, row_ids, row_scores in zip(rows[:20], found, scores, strict=True):
            np.testing.assert_allclose(row_scores, rows[row_ids] @ q, atol=1e-5)


def test_hnsw_filters_in_the_graph_when_the_filter_is_broad() -> None:
    rows = _rows(3000, seed=5)
    ids = np.arange(3000, dtype=np.int64) * 3 + 1
    with INDEX.open("hnsw://?m=16&ef_search=32", dimension=DIM, namespace="a") as index:
        index.add(ids, rows)
        index.selective = 0  # only the 1% floor (30 ids) is searched exactly
        index.remove(ids[:10])  # removed rows and the filter combine in one selector
        allowed = ids[ids % 2 == 0]  # half the ids
        _, found = index.search(rows[:40], 10, allowed=allowed)
        assert (found >= 0).all()
        assert np.isin(found, allowed).all()
        assert not np.isin(found, ids[:10]).any()
        # A narrow filter inside the floor goes the exact way and is exact.
        narrow = ids[10:35]
        scores, found = index.search(rows[100:110], 5, allowed=narrow)
        expected = np.sort(rows[100:110] @ rows[10:35].T, axis=1)[:, ::-1][:, :5]
        np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_hnsw_search_settings_can_change_at_load(tmp_path: Path) -> None:
    rows = _rows(200, seed=9)
    with INDEX.open(
        "hnsw://?m=8&ef_construction=40&ef_search=20", dimension=DIM, namespace="a"
    ) as ix:
        ix.add(np.arange(200), rows)
        ix.save(tmp_path)
    url = BackendURL.parse("hnsw://?ef_search=50")
    loaded = INDEX.resolve(url).load(url, tmp_path, dimension=DIM, namespace="a")
    with loaded:
        params = loaded.params()
        assert (params["m"], params["ef_construction"], params["ef_search"]) == (8, 40, 50)
        assert len(loaded) == 200
