"""PyTorch optimization: ONNX export, magnitude pruning, INT8 and reports, on trained modules."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from torch import nn

from conveyor.errors import InvalidInputError
from conveyor.training.optimize import (
    OnnxModel,
    compare,
    export_torch_onnx,
    prune_magnitude,
    quantize_dynamic_int8,
    size_of,
)

#: ONNX Runtime against PyTorch on the same float32 graph.
EXPORT_TOLERANCE = 1e-4
N_FEATURES = 8


def _data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features, a 3-class label and a regression target, from a fixed rule plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    score = X[:, 0] + X[:, 1] * X[:, 2] - 0.5 * X[:, 3]
    label = np.digitize(score, [-0.5, 0.5]).astype(np.int64)
    target = (score + 0.1 * rng.normal(size=n)).astype(np.float32)
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(N_FEATURES)]), label, target


def _train(net: nn.Module, X: pd.DataFrame, y: np.ndarray, loss: str, steps: int = 150) -> None:
    inputs = torch.tensor(X.to_numpy())
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        out = net(inputs)
        if loss == "cross_entropy":
            value = nn.functional.cross_entropy(out, torch.from_numpy(y))
        elif loss == "bce":
            value = nn.functional.binary_cross_entropy_with_logits(
                out.ravel(), torch.from_numpy(y.astype(np.float32))
            )
        else:
            value = nn.functional.mse_loss(out.ravel(), torch.from_numpy(y))
        value.backward()
        optimizer.step()
    net.eval()


def _outputs(net: nn.Module, X: pd.DataFrame) -> np.ndarray:
    with torch.inference_mode():
        result: np.ndarray = net(torch.tensor(X.to_numpy())).numpy()
    return result


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.DataFrame, np.ndarray, np.ndarray]:
    return (*_data(1500, seed=0), *_data(500, seed=1))


@pytest.fixture(scope="module")
def classifier(data: tuple) -> nn.Sequential:  # type: ignore[type-arg]
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)
    )
    _train(net, data[0], data[1], "cross_entropy")
    return net


@pytest.fixture(scope="module")
def regressor(data: tuple) -> nn.Sequential:  # type: ignore[type-arg]
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(N_FEATURES, 32), nn.Tanh(), nn.Linear(32, 1))
    _train(net, data[0], data[2], "mse")
    return net


def test_exported_classifier_predicts_like_the_module(
    classifier: nn.Sequential,
    data: tuple,  # type: ignore[type-arg]
) -> None:
    X, _, _, X_test, _, _ = data
    onnx_model = export_torch_onnx(classifier, X)
    sig = onnx_model.signature
    assert (sig.mode, sig.task, sig.has_proba, sig.classes) == (
        "tensor",
        "classifier",
        True,
        (0, 1, 2),
    )
    assert sig.columns == tuple(X.columns) and sig.estimator == "Sequential"
    logits = torch.from_numpy(_outputs(classifier, X_test))
    expected = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(onnx_model.predict_proba(X_test), expected, atol=EXPORT_TOLERANCE)
    np.testing.assert_array_equal(onnx_model.predict(X_test), logits.argmax(dim=1).numpy())
    # The batch axis is dynamic: one row and many rows, and named columns in any order.
    np.testing.assert_allclose(
        onnx_model.predict_proba(X_test.iloc[:1]), expected[:1], atol=EXPORT_TOLERANCE
    )
    shuffled = pa.Table.from_pandas(X_test[list(reversed(X_test.columns))], preserve_index=False)
    np.testing.assert_allclose(onnx_model.predict_proba(shuffled), expected, atol=EXPORT_TOLERANCE)


def test_exported_regressor_returns_the_module_outputs(
    regressor: nn.Sequential,
    data: tuple,  # type: ignore[type-arg]
) -> None:
    X, _, _, X_test, _, _ = data
    names = [f"feature_{i}" for i in range(N_FEATURES)]
    onnx_model = export_torch_onnx(regressor, X.to_numpy(), input_names=names, target_opset=17)
    assert onnx_model.signature.task == "regressor"
    assert onnx_model.signature.columns == tuple(names)
    assert onnx_model.session.get_modelmeta() is not None
    predicted = onnx_model.predict(X_test.to_numpy())
    assert predicted.shape == (len(X_test),)
    np.testing.assert_allclose(
        predicted, _outputs(regressor, X_test).ravel(), atol=EXPORT_TOLERANCE
    )
    # It reloads from its bytes alone, as the registry will load it.
    again = OnnxModel(onnx_model.data)
    np.testing.assert_array_equal(again.predict(X_test.to_numpy()), predicted)


def test_a_single_logit_is_a_classifier_only_when_the_caller_says_so(
    data: tuple,  # type: ignore[type-arg]
) -> None:
    X, y, _, X_test, y_test, _ = data
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(N_FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))
    _train(net, X, (y == 2).astype(np.int64), "bce")
    as_regressor = export_torch_onnx(net, X)
    assert as_regressor.signature.task == "regressor"

    binary = export_torch_onnx(net, X, task="classification")
    assert binary.signature.classes == (0, 1)
    positive = 1 / (1 + np.exp(-_outputs(net, X_test).ravel().astype(np.float64)))
    proba = binary.predict_proba(X_test)
    np.testing.assert_allclose(proba[:, 1], positive, atol=EXPORT_TOLERANCE)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    clear = np.abs(positive - 0.5) > 1e-4  # away from the tie the labels are sigmoid > 0.5
    np.testing.assert_array_equal(binary.predict(X_test)[clear], (positive > 0.5)[clear])

    report = compare(net, binary, X_test, (y_test == 2).astype(np.int64), task="classification")
    assert report.metric == "roc_auc"
    assert report.max_abs_prediction_difference < EXPORT_TOLERANCE
    assert report.prediction_agreement is not None and report.prediction_agreement > 0.99


def test_pruning_reaches_the_requested_sparsity_and_keeps_predictions(
    classifier: nn.Sequential,
    data: tuple,  # type: ignore[type-arg]
) -> None:
    X_test = data[3]
    before = copy.deepcopy(classifier.state_dict())
    result = prune_magnitude(classifier, amount=0.5)
    linear = [name for name, m in classifier.named_modules() if isinstance(m, nn.Linear)]
    assert list(result.sparsity) == linear == ["0", "2", "4"]
    total = sum(m.weight.numel() for m in classifier.modules() if isinstance(m, nn.Linear))
    assert abs(result.overall_sparsity - 0.5) <= 1 / total
    for name, module in result.module.named_modules():
        if isinstance(module, nn.Linear):
            zeros = float((module.weight == 0).float().mean())
            assert zeros == pytest.approx(result.sparsity[name])
            assert not hasattr(module, "weight_mask")  # made permanent by prune.remove
            assert int((module.bias == 0).sum()) == 0  # biases are not pruned
    # The parent is untouched.
    for key, tensor in classifier.state_dict().items():
        assert torch.equal(tensor, before[key])
    # Global pruning removes the smallest weights: most labels stay the same.
    parent = _outputs(classifier, X_test).argmax(axis=1)
    child = _outputs(result.module, X_test).argmax(axis=1)
    assert np.mean(parent == child) >= 0.9


def test_pruning_only_the_chosen_layers(classifier: nn.Sequential) -> None:
    result = prune_magnitude(classifier, 0.3, layers=[nn.Conv2d, nn.Linear])
    assert result.amount == 0.3
    assert list(result.sparsity) == ["0", "2", "4"]
    with pytest.raises(InvalidInputError, match="Conv1d") as err:
        prune_magnitude(classifier, 0.3, layers=[nn.Conv1d])
    assert err.value.context["field"] == "layers"


@pytest.mark.parametrize("amount", [-0.1, 1.5, "half", True])
def test_pruning_refuses_an_amount_outside_zero_to_one(
    classifier: nn.Sequential, amount: object
) -> None:
    with pytest.raises(InvalidInputError, match="amount") as err:
        prune_magnitude(classifier, amount)  # type: ignore[arg-type]
    assert err.value.context["field"] == "amount"


def test_int8_quantization_of_the_exported_module(
    classifier: nn.Sequential,
    data: tuple,  # type: ignore[type-arg]
) -> None:
    X, _, _, X_test, y_test, _ = data
    onnx_model = export_torch_onnx(classifier, X)
    quantized = quantize_dynamic_int8(onnx_model)
    assert quantized.quantized_weights == 3  # the three Linear layers' Gemm weights
    assert quantized.size_bytes < onnx_model.size_bytes
    report = compare(classifier, quantized, X_test, y_test, metric="accuracy")
    assert report.child == "Sequential (onnx-int8)" and report.parent == "Sequential (torch)"
    assert report.prediction_agreement is not None and report.prediction_agreement >= 0.97
    assert report.metric_drop is not None and report.metric_drop <= 0.02


def test_compare_reports_size_latency_and_accuracy_of_a_pruned_module(
    classifier: nn.Sequential,
    data: tuple,  # type: ignore[type-arg]
) -> None:
    _, _, _, X_test, y_test, _ = data
    result = prune_magnitude(classifier, amount=0.5)
    report = compare(classifier, result, X_test, y_test, metric="accuracy", latency_rows=50)
    parent_labels = _outputs(classifier, X_test).argmax(axis=1)
    child_labels = _outputs(result.module, X_test).argmax(axis=1)
    assert report.parent_metric == pytest.approx(np.mean(parent_labels == y_test))
    assert report.child_metric == pytest.approx(np.mean(child_labels == y_test))
    assert report.prediction_agreement == pytest.approx(np.mean(parent_labels == child_labels))
    assert report.parent_size_bytes == size_of(classifier) > 0
    assert report.child_size_bytes == size_of(result.module) > 0
    assert report.parent_p95_latency_ms > 0 and report.child_p95_latency_ms > 0
    assert report.notes == result.notes
    names = {check.name for check in report.to_checks()}
    assert {"accuracy_drop", "prediction_agreement", "size_reduced"} <= names
    assert torch.get_num_threads() >= 1  # the one-thread timing scope was left


def test_compare_a_regressor_module_with_its_export(
    regressor: nn.Sequential,
    data: tuple,  # type: ignore[type-arg]
) -> None:
    X, _, _, X_test, _, target_test = data
    report = compare(regressor, export_torch_onnx(regressor, X), X_test, target_test)
    assert report.metric == "r2" and report.prediction_agreement is None
    assert report.max_abs_prediction_difference < EXPORT_TOLERANCE
    assert report.metric_difference is not None and abs(report.metric_difference) < 1e-4
    with pytest.raises(InvalidInputError, match="cannot compare a classifier"):
        compare(regressor, export_torch_onnx(regressor, X), X_test, task="classification")


def test_a_module_in_training_mode_is_measured_in_eval_mode(
    data: tuple,  # type: ignore[type-arg]
) -> None:
    X, y, _, X_test, y_test, _ = data
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(N_FEATURES, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))
    _train(net, X, y, "cross_entropy", steps=30)
    net.train()
    onnx_model = export_torch_onnx(net, X)
    report = compare(net, onnx_model, X_test, y_test)
    # With dropout on, the module would disagree with its own export on many rows.
    assert report.max_abs_prediction_difference < EXPORT_TOLERANCE
    assert net.training


def test_bad_inputs_are_refused_naming_the_field(classifier: nn.Sequential) -> None:
    X = np.zeros((4, N_FEATURES), dtype=np.float32)
    with pytest.raises(InvalidInputError, match=r"torch\.nn\.Module") as not_module:
        export_torch_onnx(object(), X)  # type: ignore[arg-type]
    assert not_module.value.context["field"] == "module"
    with pytest.raises(InvalidInputError) as task:
        export_torch_onnx(classifier, X, task="ranking")  # type: ignore[arg-type]
    assert task.value.context["field"] == "task"
    with pytest.raises(InvalidInputError, match="4 columns") as width:
        export_torch_onnx(classifier, X[:, :4])
    assert width.value.context["field"] == "sample"
    with pytest.raises(InvalidInputError) as names:
        export_torch_onnx(classifier, X, input_names=["a", "b"])
    assert names.value.context["field"] == "input_names"
    with pytest.raises(InvalidInputError) as text:
        export_torch_onnx(classifier, pd.DataFrame({"x0": ["a", "b"]}))
    assert text.value.context["field"] == "x0"
