"""The output signature: recorded at registration from the model's real answers, and every
flavor's answers read as it says (an ONNX copy answers like its scikit-learn parent)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from registry_support import Doubler, labels, training_frame

from conveyor.errors import ModelUnavailableError
from conveyor.registry import Registry
from conveyor.registry.outputs import Output, conform, infer_outputs, mismatches
from conveyor.registry.signature import Signature

pytest.importorskip("skl2onnx")


def _regression_target(frame: pd.DataFrame) -> Any:
    return frame["income"] * 0.5 + frame["age"] * 3.0


def test_registration_records_dtype_and_per_row_shape(sqlite_registry: Registry) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    frame = training_frame()
    regressor = LinearRegression().fit(frame, _regression_target(frame))
    classifier = LogisticRegression(max_iter=500).fit(frame, labels(frame))
    both = np.column_stack([_regression_target(frame), frame["score"]])
    multi = LinearRegression().fit(frame, both)

    def outputs(model: Any) -> list[dict[str, Any]]:
        version = sqlite_registry.register("m", model, signature_from=frame)
        signature = version.signature
        assert signature is not None
        found: list[dict[str, Any]] = signature["outputs"]
        return found

    assert outputs(regressor) == [{"name": "predict", "dtype": "float64", "shape": []}]
    assert outputs(classifier) == [{"name": "predict", "dtype": "int64", "shape": []}]
    assert outputs(multi) == [{"name": "predict", "dtype": "float64", "shape": [2]}]
    assert outputs(Doubler()) == [{"name": "predict", "dtype": "float64", "shape": []}]


def test_a_version_without_outputs_still_loads_and_predicts(sqlite_registry: Registry) -> None:
    """Versions registered before output signatures existed: served as they answer."""
    frame = training_frame()
    old = Signature.infer(frame).to_dict()  # what older versions stored: no "outputs"
    assert "outputs" not in old
    restored = Signature.from_dict(old)
    assert restored.outputs == ()
    version = sqlite_registry.register("old", Doubler())  # no signature at all
    loaded = sqlite_registry.load(version)
    assert loaded.predict(frame.head(3)).shape == (3,)


def test_onnx_regressor_answers_like_its_parent(sqlite_registry: Registry) -> None:
    """The bug: sklearn answered [453452.36], its ONNX copy [[453452.34]]."""
    import onnx
    from sklearn.linear_model import LinearRegression

    from conveyor.training.optimize.onnx_model import export_onnx

    frame = training_frame()
    parent_model = LinearRegression().fit(frame, _regression_target(frame))
    parent = sqlite_registry.register("house", parent_model, signature_from=frame)
    exported = export_onnx(parent_model, frame.head(20))
    child = sqlite_registry.register(
        "house", onnx.load_from_string(exported.data), signature_from=frame, parent=parent
    )
    assert child.signature is not None and parent.signature is not None
    assert child.signature["outputs"] == parent.signature["outputs"]

    rows = frame.head(4)
    from_parent = sqlite_registry.load(parent).predict(rows)
    from_child = sqlite_registry.load(child).predict(rows)
    assert from_parent.shape == from_child.shape == (4,)
    assert from_child.dtype == np.float64
    np.testing.assert_allclose(from_child, from_parent, rtol=1e-4)


# Unscaled columns: lbfgs may stop at max_iter (scikit-learn 1.9 warns); labels are what count.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_onnx_classifier_answers_labels_like_its_parent(sqlite_registry: Registry) -> None:
    import onnx
    from sklearn.linear_model import LogisticRegression

    from conveyor.training.optimize.onnx_model import export_onnx

    frame = training_frame()
    y = pd.Series(np.array(["low", "mid", "high"])[(frame["score"] * 3).astype(int).clip(0, 2)])
    parent_model = LogisticRegression(max_iter=1000).fit(frame, y)
    parent = sqlite_registry.register("tier", parent_model, signature_from=frame)
    exported = export_onnx(parent_model, frame.head(20))
    child = sqlite_registry.register(
        "tier", onnx.load_from_string(exported.data), signature_from=frame, parent=parent
    )
    assert parent.signature is not None
    assert parent.signature["outputs"] == [{"name": "predict", "dtype": "string", "shape": []}]
    answer = sqlite_registry.load(child).predict(frame.head(5))
    assert answer.shape == (5,)
    assert set(answer.tolist()) <= {"low", "mid", "high"}


def test_onnx_picks_probabilities_when_the_parent_answers_k_numbers_per_row() -> None:
    """A graph answering labels and probabilities, read as a parent answering (n, 3) floats."""
    import onnx
    import onnxruntime
    import pyarrow as pa
    from sklearn.linear_model import LogisticRegression

    from conveyor.registry.flavors import Conformed, get_flavor
    from conveyor.training.optimize.onnx_model import export_onnx

    frame = training_frame()
    y = (frame["score"] * 3).astype(int).clip(0, 2)
    model = LogisticRegression(max_iter=1000).fit(frame, y)
    session = onnxruntime.InferenceSession(
        onnx.load_from_string(export_onnx(model, frame.head(5)).data).SerializeToString()
    )
    flavor = Conformed(get_flavor("onnx"), (Output("predict", "float64", (3,)),))
    table = pa.Table.from_pandas(frame.head(6), preserve_index=False)
    probabilities = flavor.predict(session, table)
    assert probabilities.shape == (6, 3) and probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities, model.predict_proba(frame.head(6)), atol=1e-4)
    labels_only = Conformed(get_flavor("onnx"), (Output("predict", "int64", ()),))
    assert labels_only.predict(session, table).tolist() == model.predict(frame.head(6)).tolist()


def test_conform_refuses_an_answer_it_cannot_read() -> None:
    one = (Output("predict", "float64", ()),)
    assert conform(np.ones((3, 1), dtype=np.float32), one).shape == (3,)
    with pytest.raises(ModelUnavailableError) as caught:
        conform(np.ones((3, 2)), one)
    assert caught.value.code == "model_unavailable"
    assert caught.value.context["reason"] == "output_mismatch"
    assert caught.value.context["field"] == "predict"
    labels_out = (Output("predict", "int64", ()),)
    assert conform(np.array([1.0, 0.0]), labels_out).dtype == np.int64
    with pytest.raises(ModelUnavailableError, match="non-integral"):
        conform(np.array([0.5, 1.0]), labels_out)
    with pytest.raises(ModelUnavailableError, match="holds string"):
        conform(np.array(["a", "b"]), one)


def test_mappings_and_mismatch_sentences() -> None:
    answer = {"label": np.array([1, 0]), "score": np.array([[0.2], [0.9]], dtype=np.float32)}
    found = infer_outputs(answer, 2)
    assert [o.to_dict() for o in found] == [
        {"name": "label", "dtype": "int64", "shape": []},
        {"name": "score", "dtype": "float32", "shape": [1]},
    ]
    wanted = (Output("label", "int64", ()), Output("score", "float64", ()))
    conformed = conform(answer, wanted)
    assert conformed["score"].shape == (2,) and conformed["score"].dtype == np.float64
    assert mismatches(wanted, found) == [
        "output 'score' is float32 [1] per row; expected float64 []"
    ]
    assert mismatches(wanted, wanted) == []
