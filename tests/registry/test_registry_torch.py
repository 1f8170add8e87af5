"""The PyTorch flavor: a trained module round-trips through the registry and predicts the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from registry_torch_support import COLUMNS, FramedNet, KeywordNet, regression_frame, train
from torch import nn

from conveyor.errors import ArtifactIntegrityError, InvalidInputError
from conveyor.registry import Registry
from conveyor.registry.flavors import TORCH_MAGIC, TorchFlavor, flavor_for, installed_version
from conveyor.registry.versions import ModelVersion
from fresh_python import loaded_of


def _trained_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    frame, target = regression_frame()
    train(net, frame, target)
    return net.eval()


def _expected(net: nn.Module, frame: object) -> np.ndarray:
    inputs = torch.tensor(frame[list(COLUMNS)].to_numpy(), dtype=torch.float32)  # type: ignore[index]
    with torch.inference_mode():
        result: np.ndarray = net(inputs).numpy()
    return result


def _artifact(registry: Registry, version: ModelVersion) -> Path:
    return Path(registry.artifacts.key(version.artifact_digest))


def _format(registry: Registry, version: ModelVersion) -> bytes:
    data = _artifact(registry, version).read_bytes()
    assert data.startswith(TORCH_MAGIC)
    return data[len(TORCH_MAGIC) : data.index(b"\n", len(TORCH_MAGIC))]


def test_trained_sequential_round_trips_as_torchscript(registry: Registry) -> None:
    net = _trained_net()
    frame, _ = regression_frame(seed=1)
    net.train()  # registered in training mode: the loaded model must still be in eval mode
    version = registry.register("torch-reg", net, signature_from=frame)
    assert version.flavor == "pytorch"
    assert version.libraries["torch"] == installed_version("torch")
    assert b'"format": "torchscript"' in _format(registry, version)
    assert net.training  # saving does not change the caller's module

    loaded = registry.load("torch-reg@1")
    assert loaded.library_mismatches == ()
    assert not loaded.model.training
    predicted = loaded.predict(frame)
    assert isinstance(predicted, np.ndarray)
    assert predicted.shape == (len(frame), 1)
    np.testing.assert_allclose(predicted, _expected(net.eval(), frame), rtol=1e-6, atol=1e-6)
    # The signature puts the columns in training order whatever the frame's order.
    reordered = frame[list(reversed(COLUMNS))]
    np.testing.assert_allclose(loaded.predict(reordered), predicted, rtol=1e-6, atol=1e-6)


def test_signature_is_enforced(sqlite_registry: Registry) -> None:
    net = _trained_net()
    frame, _ = regression_frame(seed=2)
    sqlite_registry.register("torch-sig", net, signature_from=frame)
    loaded = sqlite_registry.load("torch-sig@1")
    with pytest.raises(InvalidInputError, match="'b'") as missing:
        loaded.predict(frame.drop(columns=["b"]))
    assert missing.value.context["field"] == "b"
    with pytest.raises(InvalidInputError, match="extra") as extra:
        loaded.predict(frame.assign(extra=1.0))
    assert extra.value.context["field"] == "extra"
    with pytest.raises(InvalidInputError) as wrong_type:
        loaded.predict(frame.assign(a="text"))
    assert wrong_type.value.context["field"] == "a"


def test_a_module_torchscript_cannot_compile_is_saved_pickled(sqlite_registry: Registry) -> None:
    torch.manual_seed(3)
    net = KeywordNet()
    frame, target = regression_frame()
    train(net, frame, target, steps=20)
    version = sqlite_registry.register("torch-kw", net.eval(), signature_from=frame)
    assert b'"format": "pickle"' in _format(sqlite_registry, version)
    loaded = sqlite_registry.load(version)
    assert isinstance(loaded.model, KeywordNet) and not loaded.model.training
    np.testing.assert_allclose(loaded.predict(frame), _expected(net, frame), rtol=1e-6, atol=1e-6)


def test_torchscript_loads_without_the_class_being_importable(
    sqlite_registry: Registry,
) -> None:
    class LocalNet(nn.Module):  # a local class: pickle could not find it again
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.linear(x))

    torch.manual_seed(4)
    net = LocalNet().eval()
    frame, _ = regression_frame(50)
    version = sqlite_registry.register("torch-local", net, signature_from=frame)
    loaded = sqlite_registry.load(version)
    assert not isinstance(loaded.model, LocalNet)  # a ScriptModule rebuilt from the artifact
    np.testing.assert_allclose(loaded.predict(frame), _expected(net, frame), rtol=1e-6, atol=1e-6)


def test_a_tampered_torch_artifact_is_refused_at_load(sqlite_registry: Registry) -> None:
    frame, _ = regression_frame(20)
    version = sqlite_registry.register("torch-tamper", _trained_net(), signature_from=frame)
    path = _artifact(sqlite_registry, version)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        sqlite_registry.load(version)


def test_bytes_without_the_torch_header_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="conveyor-torch") as err:
        TorchFlavor().load(b"PK\x03\x04 a zip file, not a conveyor artifact")
    assert err.value.context["field"] == "artifact"
    with pytest.raises(InvalidInputError, match="conveyor-torch"):
        TorchFlavor().load(TORCH_MAGIC + b'{"format": "onnx"}\n')


def test_a_python_model_that_is_a_module_keeps_its_own_predict(
    sqlite_registry: Registry,
) -> None:
    model = FramedNet()
    assert flavor_for(model).name == "python"
    frame, _ = regression_frame(30)
    version = sqlite_registry.register("framed", model, signature_from=frame)
    np.testing.assert_allclose(
        sqlite_registry.load(version).predict(frame), model.predict(frame), rtol=1e-6, atol=1e-6
    )


def test_choosing_a_flavor_does_not_import_torch() -> None:
    code = (
        "from sklearn.linear_model import LinearRegression\n"
        "from conveyor.registry.flavors import flavor_for\n"
        "assert flavor_for(LinearRegression()).name == 'sklearn'\n"
    )
    assert loaded_of(("torch",), code) == []
