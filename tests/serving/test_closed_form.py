"""A linear model predicted by its formula: the model's own answers, to the bit, or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import (
    ElasticNet,
    LinearRegression,
    LogisticRegression,
    Perceptron,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import LinearSVC

from conveyor.artifacts.store import ArtifactStore
from conveyor.registry import Registry
from conveyor.registry.formula import Formula, extract
from conveyor.serving.closed_form import closed_form
from conveyor.serving.pool import matrix_predict
from conveyor.store.database import MetadataStore

RNG = np.random.default_rng(7)
X = RNG.normal(size=(400, 12)) * RNG.uniform(0.1, 50, size=12)
BINARY = (X[:, 0] - 0.3 * X[:, 1] > 0).astype(int)
THREE = np.digitize(X[:, 2] + X[:, 3], [-20, 20])
WORDS = np.array(["low", "mid", "high"])[THREE]
TARGET = X @ RNG.normal(size=12) + 3.0


def _fitted() -> list[tuple[str, Any]]:
    return [
        ("logistic binary", LogisticRegression(max_iter=2000).fit(X, BINARY)),
        ("logistic 3 classes", LogisticRegression(max_iter=2000).fit(X, THREE)),
        ("logistic string labels", LogisticRegression(max_iter=2000).fit(X, WORDS)),
        ("logistic no intercept", LogisticRegression(fit_intercept=False).fit(X, BINARY)),
        ("linear svc", LinearSVC().fit(X, THREE)),
        ("sgd", SGDClassifier(random_state=0).fit(X, BINARY)),
        ("perceptron", Perceptron(random_state=0).fit(X, WORDS)),
        ("linear regression", LinearRegression().fit(X, TARGET)),
        (
            "scaled logistic",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, THREE),
        ),
        (
            "scaled twice, a passthrough",
            Pipeline(
                [
                    ("center", StandardScaler(with_std=False)),
                    ("skip", "passthrough"),
                    ("scale", StandardScaler(with_mean=False)),
                    ("model", LinearRegression()),
                ]
            ).fit(X, TARGET),
        ),
        ("two targets", LinearRegression().fit(X, np.c_[TARGET, -TARGET])),
    ]


@pytest.mark.parametrize(("name", "model"), _fitted(), ids=[n for n, _ in _fitted()])
def test_the_formula_answers_exactly_as_the_model(name: str, model: Any) -> None:
    predict = closed_form(model)
    assert predict is not None, name
    fresh = RNG.normal(size=(257, 12)) * 40
    for rows in (fresh, fresh[:1], X):
        before = rows.copy()
        ours, theirs = predict(rows), model.predict(rows)
        assert np.array_equal(rows, before)  # the caller's matrix is not scaled in place
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert np.array_equal(ours, theirs), name  # bitwise, not approximately


@pytest.mark.parametrize(("name", "model"), _fitted(), ids=[n for n, _ in _fitted()])
def test_the_recorded_formula_answers_exactly_as_the_model(name: str, model: Any) -> None:
    formula = extract(model)
    assert formula is not None, name
    data = formula.to_bytes()
    assert data is not None and b"pickle" not in data
    recorded = Formula.from_bytes(data)
    fresh = RNG.normal(size=(257, 12)) * 40
    for rows in (fresh, fresh[:1], X):
        ours, theirs = recorded(rows), model.predict(rows)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
        assert np.array_equal(ours, theirs), name
        if ours.dtype == object:  # string labels come back as Python strs, as classes_ holds
            assert {type(v) for v in ours.tolist()} == {str}


def test_a_formula_artifact_of_another_kind_is_refused() -> None:
    import io

    out = io.BytesIO()
    np.savez(out, meta=np.frombuffer(b'{"kind": "linear-formula/9"}', dtype=np.uint8))
    with pytest.raises(ValueError, match="linear-formula/9"):
        Formula.from_bytes(out.getvalue())


@pytest.mark.parametrize(
    "model",
    [
        LogisticRegression().fit(X, BINARY),
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X, BINARY),
    ],
    ids=["plain", "scaled"],
)
def test_non_finite_input_gets_scikit_learns_own_error(model: Any) -> None:
    predict = closed_form(model)
    assert predict is not None
    for bad in (np.nan, np.inf):
        rows = X[:3].copy()
        rows[1, 4] = bad
        with pytest.raises(ValueError) as ours:
            predict(rows)
        with pytest.raises(ValueError) as theirs:
            model.predict(rows)
        assert str(ours.value) == str(theirs.value)


def test_finite_input_never_calls_the_models_predict() -> None:
    model = LogisticRegression().fit(X, BINARY)
    calls: list[int] = []
    own = model.predict

    def counted(rows: Any) -> Any:
        calls.append(len(rows))
        return own(rows)

    model.predict = counted  # the instance's: the class's predict is still scikit-learn's
    predict = closed_form(model)
    assert predict is not None
    predict(X[:5])
    assert calls == []
    with pytest.raises(ValueError):
        predict(np.full((2, 12), np.nan))
    assert calls == [2]


class _Shifted(LogisticRegression):
    def predict(self, X: Any) -> Any:  # a user's own predict: not the formula's business
        return super().predict(X + 1.0)


def test_models_it_does_not_know_are_left_to_their_own_predict() -> None:
    sparse = LogisticRegression().fit(X, BINARY).sparsify()
    assert closed_form(sparse) is None
    assert closed_form(_Shifted().fit(X, BINARY)) is None
    # their own predict or decision function (multi-label, sparse input): theirs to run
    assert closed_form(RidgeClassifier().fit(X, WORDS)) is None
    assert closed_form(Ridge().fit(X, TARGET)) is None
    assert closed_form(ElasticNet(alpha=0.01).fit(X, TARGET)) is None
    assert closed_form(LogisticRegression()) is None  # not fitted
    assert closed_form(make_pipeline(MinMaxScaler(), LogisticRegression()).fit(X, BINARY)) is None
    assert closed_form(make_pipeline(StandardScaler(), Ridge()).fit(X, TARGET)) is None
    assert closed_form(object()) is None


def test_the_server_pool_uses_it_unless_switched_off(tmp_path: Path) -> None:
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(12)])
    model = LogisticRegression(max_iter=2000).fit(frame, THREE)
    with (
        MetadataStore.from_url(f"sqlite:///{tmp_path}/c.db") as store,
        ArtifactStore.from_url(f"file://{tmp_path}/a") as artifacts,
    ):
        registry = Registry(store, artifacts)
        loaded = registry.load(registry.register("m", model, signature_from=frame))
        rows = pa.Table.from_pandas(frame.head(64), preserve_index=False)
        expected = model.predict(frame.head(64))
        seen: list[int] = []
        own = loaded.model.predict
        loaded.model.predict = lambda rows: seen.append(len(rows)) or own(rows)
        on, off = matrix_predict(loaded), matrix_predict(loaded, closed=False)
        assert on is not None and off is not None
        seen.clear()  # the checks against the flavor at load call it
        assert np.array_equal(on(rows), expected)
        assert seen == []
        assert np.array_equal(off(rows), expected)
        assert seen == [64]


def test_a_matrix_not_in_float64_is_the_models_own_to_predict() -> None:
    scaled = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, THREE)
    predict = closed_form(scaled)
    assert predict is not None
    rows = X[:40].astype(np.float32)
    assert np.array_equal(predict(rows), scaled.predict(rows))
