"""pgvector behind the index seam, against the real PostgreSQL: one table per namespace, the
ANN index built at the first search, load reconnecting, URL options checked, filters that
exclude the nearest rows still filling k (pgvector's iterative scan)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest

from conveyor.backends import BackendURL
from conveyor.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from conveyor.rag.index import INDEX
from conveyor.rag.index.pgvector import PgVectorIndex

DIM = 24


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, DIM))
    rows = centres[rng.integers(0, 10, n)] + 0.5 * rng.standard_normal((n, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _url(pg_url: str, **options: str) -> str:
    parsed = BackendURL.parse(pg_url)
    return parsed.with_(query={**parsed.query, **options}).render(hide_password=False)


def _load(url: str, namespace: str, dimension: int = DIM) -> PgVectorIndex:
    return PgVectorIndex.load(BackendURL.parse(url), None, dimension=dimension, namespace=namespace)


def test_a_namespace_is_a_table_and_load_reconnects_to_it(pg_url: str) -> None:
    url = _url(pg_url, index="hnsw", m="8", ef_construction="32", ef_search="40")
    rows = _rows(300)
    with INDEX.open(url, dimension=DIM, namespace="docs_v3") as index:
        index.add(np.arange(300), rows)
        expected = index.search(rows[:5], 4)
        params = index.params()
        assert params["table"] == "rag_docs_v3"
        assert params["ann_index_built"]  # built by the first search
        assert params["library"].startswith("pgvector 0.")
        assert (params["m"], params["ef_construction"], params["ef_search"]) == (8, 32, 40)
        assert params["bytes_per_vector"] > 4 * DIM
    with psycopg.connect(pg_url) as conn:
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'rag_docs_v3'"
        ).fetchall()
    assert any("USING hnsw" in row[0] and "vector_ip_ops" in row[0] for row in indexes)
    with _load(url, "docs_v3") as again:
        assert len(again) == 300
        got = again.search(rows[:5], 4)
        np.testing.assert_array_equal(got[1], expected[1])
        again.drop()
    with pytest.raises(NotFoundError, match="no vector table rag_docs_v3"):
        _load(url, "docs_v3")


def test_creating_a_namespace_twice_is_refused(pg_url: str) -> None:
    with INDEX.open(pg_url, dimension=DIM, namespace="twice"):
        pass
    with pytest.raises(AlreadyExistsError, match="rag_twice already exists"):
        INDEX.open(pg_url, dimension=DIM, namespace="twice")


def test_loading_with_another_dimension_names_both(pg_url: str) -> None:
    with INDEX.open(pg_url, dimension=DIM, namespace="dims"):
        pass
    with pytest.raises(InvalidInputError, match=f"dimension {DIM} but dimension 8"):
        _load(pg_url, "dims", dimension=8)


def test_ivfflat_waits_for_enough_rows_then_builds_its_lists(pg_url: str) -> None:
    url = _url(pg_url, index="ivfflat", lists="4", probes="2")
    rows = _rows(400, seed=1)
    with INDEX.open(url, dimension=DIM, namespace="lists") as index:
        index.add(np.arange(100), rows[:100])
        index.search(rows[:1], 3)
        assert not index.params()["ann_index_built"]  # 100 < 39 x 4: scanned exactly
        index.add(np.arange(100, 400), rows[100:])
        _, ids = index.search(rows[:20], 10)
        assert index.params()["ann_index_built"]
        assert (ids >= 0).all()  # the iterative scan fills k beyond the 2 probed lists


def test_a_filter_far_from_the_query_still_fills_k(pg_url: str) -> None:
    rows = _rows(2000, seed=2)
    ids = np.arange(2000, dtype=np.int64)
    url = _url(pg_url, index="hnsw", ef_search="10")
    with INDEX.open(url, dimension=DIM, namespace="far") as index:
        index.add(ids, rows)
        query = rows[:1]
        order = np.argsort(-(rows @ query[0]))
        allowed = order[-300:]  # the 300 rows least like the query
        scores, found = index.search(query, 10, allowed=allowed)
        assert (found >= 0).all()
        assert np.isin(found, allowed).all()
        expected = np.sort(rows[allowed] @ query[0])[::-1][:10]
        np.testing.assert_allclose(scores[0], expected, atol=1e-5)


def test_bad_urls_and_namespaces_are_refused(pg_url: str) -> None:
    with pytest.raises(InvalidInputError, match="index must be hnsw or ivfflat"):
        INDEX.open(_url(pg_url, index="diskann"), dimension=DIM, namespace="a")
    with pytest.raises(InvalidInputError, match=r"lists belong to index=ivfflat"):
        INDEX.open(_url(pg_url, index="hnsw", lists="10"), dimension=DIM, namespace="a")
    with pytest.raises(InvalidInputError, match="probes must be an integer"):
        INDEX.open(_url(pg_url, index="ivfflat", probes="x"), dimension=DIM, namespace="a")
    with pytest.raises(InvalidInputError, match="namespace"):
        INDEX.open(pg_url, dimension=DIM, namespace='x"; drop table y; --')
    with pytest.raises(InvalidInputError, match="at most 2000 dimensions"):
        INDEX.open(pg_url, dimension=4096, namespace="a")


def test_save_writes_nothing_and_builds_the_index(pg_url: str, tmp_path: Path) -> None:
    with INDEX.open(pg_url, dimension=DIM, namespace="saved") as index:
        index.add(np.arange(50), _rows(50, seed=4))
        index.save(tmp_path)
        assert index.params()["ann_index_built"]
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_is_a_backend_unavailable_error() -> None:
    from conveyor.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="unreachable"):
        INDEX.open(
            "postgresql://postgres@127.0.0.1:1/test?connect_timeout=2",
            dimension=DIM,
            namespace="a",
        )


def test_threads_sharing_one_index_get_their_own_answers(pg_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rows = _rows(500, seed=6)
    with INDEX.open(pg_url, dimension=DIM, namespace="threads") as index:
        index.add(np.arange(500), rows)
        expected = {
            i: index.search(rows[i : i + 1], 5, allowed=np.arange(i, 500))[1] for i in range(8)
        }

        def ask(i: int) -> bool:
            got = index.search(rows[i : i + 1], 5, allowed=np.arange(i, 500))[1]
            return bool((got == expected[i]).all())

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(ask, [i % 8 for i in range(64)]))
