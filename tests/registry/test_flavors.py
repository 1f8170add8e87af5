"""Each flavor round-trips through the registry: saved, stored, verified, loaded, predicting."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from registry_support import Doubler, labels, training_frame

from conveyor.errors import ArtifactIntegrityError, InvalidInputError
from conveyor.registry import LibraryVersionWarning, PythonModel, Registry
from conveyor.registry.flavors import FLAVORS, flavor_for, installed_version
from conveyor.registry.tables import ModelVersionRecord


def _fit_sklearn():  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    frame = training_frame()
    return frame, LogisticRegression(max_iter=500).fit(frame, labels(frame))


def test_sklearn_round_trip_on_each_store(registry: Registry) -> None:
    frame, model = _fit_sklearn()
    version = registry.register("churn", model, signature_from=frame)
    assert version.flavor == "sklearn"
    assert version.libraries["scikit-learn"] == installed_version("scikit-learn")
    loaded = registry.load("churn@1")
    assert loaded.library_mismatches == ()
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


def test_sklearn_pipeline_is_recognised_by_its_base_classes() -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    assert flavor_for(make_pipeline(StandardScaler(), DecisionTreeClassifier())).name == "sklearn"


def test_python_model_round_trip(sqlite_registry: Registry) -> None:
    frame = training_frame(20)
    version = sqlite_registry.register("doubler", Doubler(3.0), signature_from=frame)
    assert version.flavor == "python"
    loaded = sqlite_registry.load(version)
    np.testing.assert_allclose(loaded.predict(frame), frame["income"].to_numpy() * 3.0)


def test_xgboost_round_trip(sqlite_registry: Registry) -> None:
    xgboost = pytest.importorskip("xgboost")
    frame = training_frame()
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(frame, labels(frame))
    version = sqlite_registry.register("xgb", model, signature_from=frame)
    assert version.flavor == "xgboost" and "xgboost" in version.libraries
    loaded = sqlite_registry.load(version)
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


def test_lightgbm_round_trip(sqlite_registry: Registry) -> None:
    lightgbm = pytest.importorskip("lightgbm")
    frame = training_frame()
    model = lightgbm.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1)
    model.fit(frame, labels(frame))
    version = sqlite_registry.register("lgbm", model, signature_from=frame)
    assert version.flavor == "lightgbm" and "lightgbm" in version.libraries
    loaded = sqlite_registry.load(version)
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


def test_onnx_round_trip(sqlite_registry: Registry) -> None:
    pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType

    frame, model = _fit_sklearn()
    onnx_model = skl2onnx.convert_sklearn(
        model, initial_types=[("input", FloatTensorType([None, 3]))], target_opset=17
    )
    version = sqlite_registry.register("churn-onnx", onnx_model, signature_from=frame)
    assert version.flavor == "onnx" and "onnxruntime" in version.libraries
    loaded = sqlite_registry.load(version)
    predicted = loaded.predict(frame)
    # float32 inside the graph: the labels agree with the float64 model on all but ties.
    assert (predicted == model.predict(frame)).mean() > 0.98


def test_an_object_without_a_flavor_is_refused_by_type(sqlite_registry: Registry) -> None:
    with pytest.raises(InvalidInputError, match=r"builtins\.dict") as err:
        sqlite_registry.register("nope", {"weights": [1, 2]})
    assert err.value.context["field"] == "model"
    assert sqlite_registry.models() == []


def test_a_tampered_artifact_is_refused_at_load(sqlite_registry: Registry) -> None:
    frame, model = _fit_sklearn()
    version = sqlite_registry.register("churn", model, signature_from=frame)
    path = Path(sqlite_registry.artifacts.key(version.artifact_digest))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        sqlite_registry.load(version)


def test_a_library_version_mismatch_warns_naming_both_versions(
    sqlite_registry: Registry,
) -> None:
    frame, model = _fit_sklearn()
    version = sqlite_registry.register("churn", model)
    with sqlite_registry.store.session() as session:
        session.execute(
            sa.update(ModelVersionRecord)
            .where(ModelVersionRecord.id == version.id)
            .values(libraries={**version.libraries, "scikit-learn": "0.0.1"})
        )
    installed = installed_version("scikit-learn")
    with pytest.warns(LibraryVersionWarning, match=rf"scikit-learn 0\.0\.1.*{installed}"):
        loaded = sqlite_registry.load("churn@1")
    assert len(loaded.library_mismatches) == 1
    # The model still loads and predicts.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


class Threshold(PythonModel):
    """A rule a team stores as JSON (its own format), though it is also a PythonModel."""

    def __init__(self, column: str, cut: float) -> None:
        self.column, self.cut = column, cut

    def predict(self, frame: Any) -> Any:
        return (frame[self.column] > self.cut).astype("int64").to_numpy()


class ThresholdFlavor:
    """A flavor written outside Conveyor: JSON out, JSON in, predicting from Arrow."""

    name = "threshold-json"

    def matches(self, model: Any) -> bool:
        return isinstance(model, Threshold)

    def save(self, model: Any) -> bytes:
        return json.dumps({"column": model.column, "cut": model.cut}).encode()

    def load(self, data: bytes) -> Any:
        return Threshold(**json.loads(data))

    def predict(self, model: Any, table: Any) -> Any:
        values = table.column(model.column).to_numpy(zero_copy_only=False)
        return (values > model.cut).astype("int64")

    def libraries(self) -> dict[str, str]:
        return {}


def test_a_registered_flavor_saves_loads_and_predicts_through_the_registry(
    registry: Registry,
) -> None:
    frame = training_frame(50)
    rule = Threshold("score", 0.5)
    assert flavor_for(rule).name == "python"  # before: the built-in PythonModel flavor
    FLAVORS.register("threshold-json", ThresholdFlavor())
    try:
        # A registered flavor is tried first, so it claims what a built-in would take.
        assert flavor_for(rule).name == "threshold-json"
        version = registry.register("rule", rule, signature_from=frame)
        assert version.flavor == "threshold-json" and version.libraries == {}
        stored = registry.artifacts.get(version.artifact_digest)
        assert json.loads(stored) == {"column": "score", "cut": 0.5}  # its own format, no pickle
        loaded = registry.load("rule@1")
        assert isinstance(loaded.model, Threshold)
        np.testing.assert_array_equal(loaded.predict(frame), rule.predict(frame))
        with pytest.raises(InvalidInputError, match="already registered"):
            FLAVORS.register("threshold-json", ThresholdFlavor())
    finally:
        FLAVORS.unregister("threshold-json")
    # Without it, the version is still recorded, and its flavor named as unknown.
    with pytest.raises(InvalidInputError, match=r"unknown model flavor 'threshold-json'; known: "):
        registry.load("rule@1")


def test_a_flavor_is_registered_under_its_own_name_and_complete() -> None:
    with pytest.raises(InvalidInputError, match="register it under that name"):
        FLAVORS.register("other-name", ThresholdFlavor())
    incomplete = ThresholdFlavor()
    incomplete.load = None  # type: ignore[assignment,method-assign]
    with pytest.raises(InvalidInputError, match="has no load"):
        FLAVORS.register("threshold-json", incomplete)
    assert "threshold-json" not in FLAVORS
