"""Model optimization: ONNX export, INT8 quantization, reports and distillation, on real models."""

from __future__ import annotations

import pickle
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import metrics
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from conveyor.checks import Report
from conveyor.checks.persist import get_report, save_report
from conveyor.errors import InvalidInputError, NotFittedError
from conveyor.store.database import MetadataStore
from conveyor.training.optimize import (
    OnnxModel,
    compare,
    distill,
    export_onnx,
    quantize_dynamic_int8,
    size_of,
)

PROBA_TOLERANCE = 1e-5
#: Accuracy an INT8 model may lose against its float parent on the hold-out set.
INT8_ACCURACY_TOLERANCE = 0.02


def _frame(X: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    X, y = make_classification(
        n_samples=1200, n_features=12, n_informative=6, n_classes=2, random_state=7
    )
    return _frame(X[:900]), y[:900], _frame(X[900:]), y[900:]


def _models() -> dict[str, Any]:
    return {
        "logistic": LogisticRegression(max_iter=500),
        "forest": RandomForestClassifier(n_estimators=25, max_depth=8, random_state=0),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    }


@pytest.fixture(scope="module")
def fitted(data: tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]) -> dict[str, Any]:
    X, y, _, _ = data
    return {name: model.fit(X, y) for name, model in _models().items()}


@pytest.mark.parametrize("name", ["logistic", "forest", "pipeline"])
def test_exported_model_predicts_like_scikit_learn(
    name: str, fitted: dict[str, Any], data: tuple[Any, ...]
) -> None:
    model = fitted[name]
    X, _, X_test, _ = data
    onnx_model = export_onnx(model, X)
    assert onnx_model.signature.mode == "tensor"
    assert onnx_model.signature.columns == tuple(X.columns)
    proba = onnx_model.predict_proba(X_test)
    assert proba.shape == model.predict_proba(X_test).shape
    np.testing.assert_allclose(proba, model.predict_proba(X_test), atol=PROBA_TOLERANCE)
    np.testing.assert_array_equal(onnx_model.predict(X_test), model.predict(X_test))
    # An Arrow table with the columns in another order gives the same answer.
    shuffled = pa.Table.from_pandas(X_test[list(reversed(X_test.columns))], preserve_index=False)
    np.testing.assert_array_equal(onnx_model.predict_proba(shuffled), proba)


def test_forest_ties_go_to_the_first_class_as_in_scikit_learn() -> None:
    # Two fully grown trees have pure leaves: where they disagree the vote is 0.5 / 0.5.
    X, y = make_classification(n_samples=600, n_features=6, flip_y=0.2, random_state=3)
    forest = RandomForestClassifier(n_estimators=2, random_state=1).fit(X[:300], y[:300])
    tied = np.isclose(forest.predict_proba(X[300:])[:, 0], 0.5)
    assert tied.any()  # the case under test occurs
    onnx_model = export_onnx(forest, X)
    np.testing.assert_array_equal(onnx_model.predict(X[300:]), forest.predict(X[300:]))


def test_numpy_sample_names_features_and_takes_arrays() -> None:
    X, y = make_classification(n_samples=300, n_features=5, random_state=1)
    model = LogisticRegression().fit(X, y)
    onnx_model = export_onnx(model, X)
    assert onnx_model.signature.columns == ("f0", "f1", "f2", "f3", "f4")
    np.testing.assert_allclose(
        onnx_model.predict_proba(X), model.predict_proba(X), atol=PROBA_TOLERANCE
    )
    with pytest.raises(InvalidInputError, match="5 columns"):
        onnx_model.predict(X[:, :4])


def test_column_transformer_pipeline_gets_one_named_input_per_column() -> None:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "amount": rng.normal(100, 30, n),
            "age": rng.integers(18, 90, n),
            "country": rng.choice(["fr", "de", "us"], n),
        }
    )
    y = ((frame["amount"] > 100) ^ (frame["country"] == "us")).astype(int).to_numpy()
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("numbers", StandardScaler(), ["amount", "age"]),
                        ("country", OneHotEncoder(handle_unknown="ignore"), ["country"]),
                    ]
                ),
            ),
            ("classify", LogisticRegression()),
        ]
    ).fit(frame, y)
    onnx_model = export_onnx(model, frame)
    sig = onnx_model.signature
    assert sig.mode == "columns"
    assert dict(zip(sig.columns, sig.types, strict=True)) == {
        "amount": "float",
        "age": "int64",
        "country": "string",
    }
    assert [i.name for i in onnx_model.session.get_inputs()] == ["amount", "age", "country"]
    np.testing.assert_allclose(
        onnx_model.predict_proba(frame), model.predict_proba(frame), atol=PROBA_TOLERANCE
    )
    np.testing.assert_array_equal(onnx_model.predict(frame), model.predict(frame))
    with pytest.raises(InvalidInputError, match="country") as missing:
        onnx_model.predict(frame.drop(columns=["country"]))
    assert missing.value.context["field"] == "country"
    with pytest.raises(InvalidInputError, match="named columns"):
        onnx_model.predict(frame.to_numpy())


def test_model_rebuilt_from_its_bytes_predicts_the_same(fitted: dict[str, Any], data: Any) -> None:
    X, _, X_test, _ = data
    onnx_model = export_onnx(fitted["forest"], X)
    again = OnnxModel(onnx_model.data)
    assert again.signature == onnx_model.signature
    np.testing.assert_array_equal(again.predict_proba(X_test), onnx_model.predict_proba(X_test))
    with pytest.raises(InvalidInputError, match="cannot load"):
        OnnxModel(b"not an onnx file")
    with pytest.raises(InvalidInputError, match="intra_op_threads"):
        OnnxModel(onnx_model.data, intra_op_threads=-1)
    unpickled = pickle.loads(pickle.dumps(onnx_model))
    assert unpickled.intra_op_threads == 1
    np.testing.assert_array_equal(unpickled.predict(X_test), onnx_model.predict(X_test))


def test_regressor_predicts_a_vector_and_has_no_probabilities() -> None:
    X, y = make_regression(n_samples=300, n_features=8, noise=1.0, random_state=0)
    model = LinearRegression().fit(X, y)
    onnx_model = export_onnx(model, _frame(X))
    predicted = onnx_model.predict(_frame(X))
    assert predicted.shape == (300,)
    np.testing.assert_allclose(predicted, model.predict(X), rtol=1e-4, atol=1e-3)
    with pytest.raises(InvalidInputError, match="no class probabilities"):
        onnx_model.predict_proba(_frame(X))


class _Handmade(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    def fit(self, X: Any, y: Any) -> _Handmade:
        self.classes_ = np.unique(y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.zeros(len(X), dtype=int)


def test_unsupported_estimators_are_named_with_the_reason(data: Any) -> None:
    X, y, _, _ = data
    with pytest.raises(InvalidInputError, match=r"NearestCentroid has no ONNX converter") as e:
        export_onnx(NearestCentroid().fit(X, y), X)
    assert e.value.context["estimator"] == "NearestCentroid"
    nested = make_pipeline(StandardScaler(), _Handmade()).fit(X, y)
    with pytest.raises(InvalidInputError, match=r"_Handmade \(at Pipeline\['_handmade'\]\)"):
        export_onnx(nested, X)
    with pytest.raises(InvalidInputError, match="neither a classifier nor a regressor"):
        export_onnx(KMeans(n_clusters=2, n_init=1, random_state=0).fit(X), X)
    with pytest.raises(NotFittedError, match="LogisticRegression is not fitted"):
        export_onnx(LogisticRegression(), X)


def test_bad_frames_name_the_column(fitted: dict[str, Any], data: Any) -> None:
    X, _, X_test, _ = data
    onnx_model = export_onnx(fitted["logistic"], X)
    with pytest.raises(InvalidInputError, match="x3") as missing:
        onnx_model.predict(X_test.drop(columns=["x3"]))
    assert missing.value.context["field"] == "x3"
    text = X_test.assign(x5=X_test["x5"].astype(str))
    with pytest.raises(InvalidInputError, match=r"column 'x5' is (large_)?string"):
        onnx_model.predict(text)
    with pytest.raises(InvalidInputError, match="fitted on 12 features"):
        export_onnx(LogisticRegression().fit(X.to_numpy(), data[1]), X.to_numpy()[:, :10])


@pytest.fixture(scope="module")
def wide() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    X, y = make_classification(
        n_samples=1500, n_features=120, n_informative=40, n_redundant=20, random_state=11
    )
    return _frame(X[:1100]), y[:1100], _frame(X[1100:]), y[1100:]


@pytest.fixture(scope="module")
def mlp(wide: Any) -> MLPClassifier:
    X, y, _, _ = wide
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few epochs are enough here
        return MLPClassifier(hidden_layer_sizes=(256,), max_iter=40, random_state=0).fit(X, y)


def test_int8_quantization_shrinks_linear_layers_and_keeps_accuracy(
    mlp: MLPClassifier, wide: Any
) -> None:
    X, _, X_test, y_test = wide
    parent = export_onnx(mlp, X)
    child = quantize_dynamic_int8(parent)
    assert child.quantized_weights == 2  # both dense layers
    assert child.size_bytes < 0.5 * parent.size_bytes
    report = compare(parent, child, X_test, y_test, metric="accuracy")
    assert report.parent_metric == metrics.accuracy_score(y_test, parent.predict(X_test))
    assert report.child_metric == metrics.accuracy_score(y_test, child.predict(X_test))
    assert report.metric_drop is not None
    assert report.metric_drop <= INT8_ACCURACY_TOLERANCE
    checks = {
        c.name: c
        for c in report.to_checks(max_metric_drop=INT8_ACCURACY_TOLERANCE, require_smaller=True)
    }
    assert checks["size_reduced"].passed
    assert checks["size_reduced"].severity == "error"
    assert checks["accuracy_drop"].passed
    assert checks["int8_quantized_weights"].passed
    assert "MatMul" in checks["int8_quantized_weights"].detail


def test_a_model_with_nothing_to_quantize_says_so(fitted: dict[str, Any], data: Any) -> None:
    X, _, X_test, y_test = data
    parent = export_onnx(fitted["forest"], X)
    child = quantize_dynamic_int8(parent)
    assert child.data == parent.data
    assert child.quantized_weights == 0
    assert "nothing to quantize" in child.notes[0]
    assert "TreeEnsemble" in child.notes[0]
    report = compare(parent, child, X_test, y_test).to_report("model:forest")
    by_name = {c.name: c for c in report}
    assert by_name["int8_quantized_weights"].status == "warn"
    assert by_name["size_reduced"].status == "warn"  # same bytes: not smaller
    assert report.verdict == "passed with warnings"
    with pytest.raises(InvalidInputError, match="takes an OnnxModel"):
        quantize_dynamic_int8(fitted["forest"])


def test_report_numbers_come_from_the_predictions(fitted: dict[str, Any], data: Any) -> None:
    X, y, X_test, y_test = data
    parent = fitted["logistic"]
    # A weaker child trained on a tenth of the rows, so the numbers differ.
    child = export_onnx(LogisticRegression(C=0.001).fit(X[:90], y[:90]), X)
    report = compare(parent, child, X_test, y_test, latency_rows=50)
    parent_proba = parent.predict_proba(X_test)
    child_proba = child.predict_proba(X_test)
    assert report.metric == "roc_auc"
    assert report.parent_metric == pytest.approx(
        metrics.roc_auc_score(y_test, parent_proba[:, 1]), abs=1e-12
    )
    assert report.child_metric == pytest.approx(
        metrics.roc_auc_score(y_test, child_proba[:, 1]), abs=1e-12
    )
    assert report.metric_difference == pytest.approx(report.child_metric - report.parent_metric)
    assert report.max_abs_prediction_difference == pytest.approx(
        np.abs(parent_proba - child_proba).max(), abs=1e-7
    )
    agreement = np.mean(parent.predict(X_test) == child.predict(X_test))
    assert report.prediction_agreement == pytest.approx(agreement)
    assert agreement < 1.0
    assert report.parent_size_bytes == len(pickle.dumps(parent, protocol=pickle.HIGHEST_PROTOCOL))
    assert report.child_size_bytes == len(child.data) == size_of(child)
    assert report.parent_p95_latency_ms > 0
    assert report.child_p95_latency_ms > 0
    assert report.n_rows == len(X_test)

    strict = {c.name: c for c in report.to_checks(min_agreement=1.0, max_metric_drop=0.0)}
    assert not strict["prediction_agreement"].passed  # agreement < 1.0, asserted above
    assert report.metric_drop is not None
    assert strict["roc_auc_drop"].passed == (report.metric_drop <= 0.0)
    bounded = report.to_checks(max_prediction_difference=1e-9, max_latency_ratio=1e6)
    by_name = {c.name: c for c in bounded}
    assert not by_name["max_abs_prediction_difference"].passed
    assert by_name["p95_latency"].severity == "warning"


def test_optimization_report_persists_like_any_report(
    fitted: dict[str, Any], data: Any, sqlite_url: str
) -> None:
    X, _, X_test, y_test = data
    report = compare(fitted["pipeline"], export_onnx(fitted["pipeline"], X), X_test, y_test)
    assert report.prediction_agreement == 1.0
    assert report.max_abs_prediction_difference <= PROBA_TOLERANCE
    as_report = report.to_report("model:churn", subject_version="3", max_prediction_difference=1e-5)
    assert as_report.kind == "optimization"
    assert as_report.passed
    with MetadataStore.from_url(sqlite_url) as store:
        save_report(store, as_report)
        loaded = get_report(store, as_report.id)
    assert loaded.to_dict() == Report.from_dict(as_report.to_dict()).to_dict()
    assert report.to_dict()["size_ratio"] == pytest.approx(report.size_ratio)


def test_metrics_for_regressors_and_bad_arguments() -> None:
    X, y = make_regression(n_samples=400, n_features=6, noise=5.0, random_state=2)
    parent = LinearRegression().fit(X[:300], y[:300])
    child = export_onnx(parent, X)
    # The default is the training flow's for a regressor (r2); rmse when asked for.
    assert compare(parent, child, X[300:], y[300:], latency_rows=5).metric == "r2"
    report = compare(parent, child, X[300:], y[300:], metric="rmse", latency_rows=20)
    assert report.metric == "rmse"
    assert not report.greater_is_better
    expected = np.sqrt(metrics.mean_squared_error(y[300:], parent.predict(X[300:])))
    assert report.parent_metric == pytest.approx(expected)
    assert report.prediction_agreement is None
    assert report.max_abs_prediction_difference == pytest.approx(
        np.abs(parent.predict(X[300:]) - child.predict(X[300:])).max()
    )
    r2 = compare(parent, child, X[300:], y[300:], latency_rows=5)
    assert r2.greater_is_better
    with pytest.raises(InvalidInputError, match="unknown metric"):
        compare(parent, child, X[300:], y[300:], metric="auc")
    with pytest.raises(InvalidInputError, match="holdout_y has 5 values for 100"):
        compare(parent, child, X[300:], y[:5])
    with pytest.raises(InvalidInputError, match="cannot compare"):
        compare(parent, LogisticRegression().fit(X, y > 0), X[300:])


def test_distilled_student_agreement_is_measured(fitted: dict[str, Any], data: Any) -> None:
    X, _, X_test, y_test = data
    teacher = fitted["forest"]
    result = distill(teacher, X, holdout_X=X_test, holdout_y=y_test)
    student = result.student
    assert isinstance(student, DecisionTreeClassifier)
    assert student.get_depth() <= 6
    assert result.soft_targets
    agreement = np.mean(student.predict(X_test) == teacher.predict(X_test))
    assert result.report.prediction_agreement == pytest.approx(agreement)
    assert agreement >= 0.8
    assert result.report.child_size_bytes < result.report.parent_size_bytes
    assert result.report.child_metric == pytest.approx(
        metrics.roc_auc_score(y_test, student.predict_proba(X_test)[:, 1])
    )
    assert any("probabilities" in note for note in result.report.notes)
    # A linear student exports to ONNX like any scikit-learn model.
    linear = distill(teacher, X, student=LogisticRegression(max_iter=500), holdout_X=X_test)
    assert linear.report.parent_metric is None
    assert "no hold-out" not in " ".join(linear.report.notes)
    exported = export_onnx(linear.student, X)
    np.testing.assert_allclose(
        exported.predict_proba(X_test),
        linear.student.predict_proba(X_test),
        atol=PROBA_TOLERANCE,
    )


def test_distillation_falls_back_to_labels_and_handles_regressors(
    fitted: dict[str, Any], data: Any
) -> None:
    X, _, _, _ = data
    knn = distill(fitted["logistic"], X, student=KNeighborsClassifier(n_neighbors=5))
    assert not knn.soft_targets
    assert any("no hold-out set" in note for note in knn.report.notes)
    assert knn.report.prediction_agreement == pytest.approx(
        np.mean(knn.student.predict(X) == fitted["logistic"].predict(X))
    )
    # The teacher can be an exported model: distillation only calls predict/predict_proba.
    from_onnx = distill(export_onnx(fitted["forest"], X), X, student=LogisticRegression())
    assert from_onnx.soft_targets
    assert from_onnx.report.prediction_agreement == pytest.approx(
        np.mean(from_onnx.student.predict(X) == fitted["forest"].predict(X)), abs=0.01
    )
    Xr, yr = make_regression(n_samples=300, n_features=5, random_state=4)
    teacher = LinearRegression().fit(Xr, yr)
    result = distill(teacher, Xr, holdout_X=Xr, holdout_y=yr)
    assert isinstance(result.student, DecisionTreeRegressor)
    assert result.report.metric == "r2"
    with pytest.raises(InvalidInputError, match="must be a regressor"):
        distill(teacher, Xr, student=LogisticRegression())


def test_multiclass_with_polars_and_arrow_frames_and_an_older_opset() -> None:
    import onnx
    import polars as pl

    X, y = make_classification(
        n_samples=900, n_features=8, n_informative=5, n_classes=3, random_state=5
    )
    frame = _frame(X)
    model = LogisticRegression(max_iter=500).fit(frame[:600], y[:600])
    onnx_model = export_onnx(model, pl.from_pandas(frame), target_opset=15)
    opsets = {o.domain: o.version for o in onnx.load_from_string(onnx_model.data).opset_import}
    assert opsets[""] <= 15
    assert onnx_model.signature.classes == (0, 1, 2)
    test = pl.from_pandas(frame[600:])
    np.testing.assert_allclose(
        onnx_model.predict_proba(test), model.predict_proba(frame[600:]), atol=PROBA_TOLERANCE
    )
    arrow = pa.Table.from_pandas(frame[600:], preserve_index=False)
    report = compare(model, onnx_model, arrow, y[600:], latency_rows=20)
    assert report.parent_metric == pytest.approx(
        metrics.roc_auc_score(y[600:], model.predict_proba(frame[600:]), multi_class="ovr")
    )
    assert report.prediction_agreement == 1.0
    log_loss = compare(model, onnx_model, arrow, y[600:], metric="log_loss", latency_rows=5)
    assert not log_loss.greater_is_better
    assert log_loss.metric_drop == pytest.approx(0.0, abs=1e-5)


_QUANTIZE_IN_A_FRESH_PROCESS = """
import logging
import numpy as np
import pandas as pd
from sklearn.neural_network import MLPRegressor
from conveyor.training.optimize import export_onnx, quantize_dynamic_int8
from conveyor.training.optimize.quantize import quiet_pre_processing_advice

X = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 4)), columns=list("abcd"))
model = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, X.sum(axis=1))
assert quantize_dynamic_int8(export_onnx(model, X)).quantized_weights == 2
with quiet_pre_processing_advice():
    logging.warning("Please consider to run pre-processing before quantization.")
    logging.warning("another warning stays visible")
logging.getLogger("conveyor.test").warning("and so do other loggers' warnings")
print("handlers left on the root logger:", len(logging.getLogger().handlers))
"""


def test_onnxruntimes_pre_processing_advice_does_not_reach_the_console() -> None:
    """quantize_dynamic logs "Please consider to run pre-processing" on every call; only
    that message is silenced, and no logging handler is left behind."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _QUANTIZE_IN_A_FRESH_PROCESS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "pre-processing" not in done.stderr, done.stderr
    assert "another warning stays visible" in done.stderr
    assert "and so do other loggers' warnings" in done.stderr
    assert "handlers left on the root logger: 0" in done.stdout
