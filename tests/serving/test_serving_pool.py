"""The pool's matrix fast path: used only where it predicts exactly like the flavor."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conveyor.artifacts.store import ArtifactStore
from conveyor.registry import Registry
from conveyor.serving.pool import matrix_predict
from conveyor.store.database import MetadataStore


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with (
        MetadataStore.from_url(f"sqlite:///{tmp_path}/c.db") as store,
        ArtifactStore.from_url(f"file://{tmp_path}/a") as artifacts,
    ):
        yield Registry(store, artifacts)


def _data(n: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "k": rng.integers(0, 5, n)})
    return X, (X["a"] + X["b"] > 0).to_numpy().astype(int)


def test_numeric_models_take_the_matrix_path_with_the_same_answers(registry: Registry) -> None:
    X, y = _data()
    for model in (
        LogisticRegression().fit(X, y),
        RandomForestClassifier(20).fit(X, y),
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y),
    ):
        version = registry.register("m", model, signature_from=X)
        loaded = registry.load(version)
        fast = matrix_predict(loaded)
        assert fast is not None
        rows = pa.Table.from_pandas(X.head(50), preserve_index=False)
        with warnings.catch_warnings(record=True) as caught:
            assert np.array_equal(fast(rows), loaded.predict(X.head(50)))
        assert not [w for w in caught if "feature names" in str(w.message)]
        # A batch of several requests (one chunk each, an int column among floats).
        chunked = pa.concat_tables([rows.slice(0, 20), rows.slice(20, 30)])
        assert chunked.column("a").num_chunks == 2
        assert np.array_equal(fast(chunked), loaded.predict(X.head(50)))


def test_models_that_select_columns_by_name_keep_the_frame(registry: Registry) -> None:
    X, y = _data()
    by_name = make_pipeline(
        ColumnTransformer([("scaled", StandardScaler(), ["b", "a"])]), LogisticRegression()
    ).fit(X, y)
    assert matrix_predict(registry.load(registry.register("m", by_name, signature_from=X))) is None
    text = X.assign(k=X["k"].astype(str))
    assert (
        matrix_predict(
            registry.load(
                registry.register("t", LogisticRegression().fit(X, y), signature_from=text)
            )
        )
        is None
    )
