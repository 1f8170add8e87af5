"""A canary of an optimized (ONNX) copy answers in its parent's shape, for every task.

The bug: a scikit-learn regressor answered ``"predictions": [453452.36]`` and its ONNX
copy ``[[453452.34]]``, so a client reading ``predictions[0]`` as a number broke for the
canary's share of users. Each model here is served by a real uvicorn under a 50 % canary
of its ONNX copy; both versions' answers must have the same JSON shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")


def _frame(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    return pd.DataFrame(
        {
            "sqft": rng.normal(1500, 400, n),
            "bedrooms": rng.integers(1, 6, n).astype("int64"),
            "age": rng.normal(30, 10, n),
        }
    )


def _models(X: pd.DataFrame) -> dict[str, tuple[Any, Any]]:
    """name -> (parent, its ONNX copy as registered), one per task."""
    import onnx
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from conveyor.training.optimize.onnx_model import export_onnx
    from conveyor.training.optimize.quantize import quantize_dynamic_int8

    price = 200 * X["sqft"] + 10_000 * X["bedrooms"] - 500 * X["age"]
    tier = np.array(["low", "mid", "high"])[np.digitize(price, np.quantile(price, [0.33, 0.66]))]
    fitted = {
        "binary": make_pipeline(StandardScaler(), LogisticRegression()).fit(
            X, (price > price.median()).astype("int64")
        ),
        "multiclass": make_pipeline(
            StandardScaler(), MLPClassifier((16,), max_iter=2000, random_state=0)
        ).fit(X, tier),
        "regression": LinearRegression().fit(X, price),
        "multioutput": LinearRegression().fit(X, np.column_stack([price, X["age"] * 2])),
    }
    found: dict[str, tuple[Any, Any]] = {}
    for name, model in fitted.items():
        exported = export_onnx(model, X.head(50))
        child = quantize_dynamic_int8(exported) if name == "multiclass" else exported
        found[name] = (model, onnx.load_from_string(child.data))
    found["probabilities"] = _torch_classifier(X, tier)
    return found


def _torch_classifier(X: pd.DataFrame, tier: np.ndarray) -> tuple[Any, Any]:
    """A PyTorch parent answering three logits per row, and its ONNX copy."""
    import onnx

    torch = pytest.importorskip("torch")
    from conveyor.training.optimize.torch_model import export_torch_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    scaled = ((X - X.mean()) / X.std()).astype("float32")
    inputs = torch.tensor(scaled.to_numpy())
    target = torch.tensor(pd.Series(tier).astype("category").cat.codes.to_numpy("int64"))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(50):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), target).backward()
        optimizer.step()
    net.eval()
    exported = export_torch_onnx(net, X.head(50), task="classification")
    return net, onnx.load_from_string(exported.data)


def _shape(value: Any) -> Any:
    """The JSON shape of an answer: ``number``, ``string``, or a list of the shapes inside."""
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def test_a_canary_of_an_onnx_copy_answers_in_its_parents_shape(tmp_path: Path) -> None:
    init_project(tmp_path, name="shapes")
    with (tmp_path / "conveyor.yaml").open("a") as spec:
        spec.write("serving: {auth: disabled}\n")
    X = _frame()
    with Project.open(tmp_path, env={}) as project:
        routes = RouteStore(project.store, project.events, project.registry)
        for name, (parent_model, child_model) in _models(X).items():
            parent = project.registry.register(name, parent_model, signature_from=X)
            project.registry.register(name, child_model, signature_from=X, parent=parent)
            routes.set(name, RoutePolicy.canary(1, 2, 50, sticky_header="x-user-id"))

        server = ThreadedServer(create_app(project))
        server.start()
        try:
            body = {"records": X.head(3).to_dict(orient="records")}
            shapes = {}
            for name in ("binary", "multiclass", "probabilities", "regression", "multioutput"):
                url = f"{server.url}/v1/models/{name}/predict"
                answers: dict[int, Any] = {}
                users = iter(range(10_000))

                def both_arms_answered(
                    url: str = url, answers: dict[int, Any] = answers, users: Any = users
                ) -> bool:
                    got = httpx.post(
                        url, json=body, headers={"x-user-id": f"u{next(users)}"}, timeout=30
                    )
                    if got.status_code == 200:
                        answers[got.json()["version"]] = got.json()["predictions"]
                    return len(answers) == 2

                wait_until(both_arms_answered, message=f"{name}: both versions answer", timeout=60)
                parent_shape, child_shape = _shape(answers[1]), _shape(answers[2])
                assert parent_shape == child_shape, (name, answers)
                shapes[name] = parent_shape

            # bedrooms is int64: 3.0 (what Python and pandas clients send) is 3; 3.5 is refused.
            url = f"{server.url}/v1/models/regression/predict"
            row = {"sqft": 1500.0, "bedrooms": 3.0, "age": 30.0}
            assert httpx.post(url, json={"records": [row]}, timeout=30).status_code == 200
            refused = httpx.post(url, json={"records": [{**row, "bedrooms": 3.5}]}, timeout=30)
            assert refused.status_code == 422
            error = refused.json()
            assert error["code"] == "invalid_input" and error["field"] == "bedrooms"
            assert "3.5 at row 0, which is not a whole number" in error["message"]
        finally:
            server.stop()
    assert shapes["binary"] == ["number"] * 3
    assert shapes["multiclass"] == ["str"] * 3
    assert shapes["probabilities"] == [["number"] * 3] * 3
    assert shapes["regression"] == ["number"] * 3  # not [[453452.34]]
    assert shapes["multioutput"] == [["number"] * 2] * 3
