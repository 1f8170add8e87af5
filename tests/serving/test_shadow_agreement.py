"""A shadow's numbers agree within a tolerance, and its event says how far apart they were."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.serving.shadow import ATOL, RTOL, compare
from conveyor.testing.wait import wait_until


def test_numbers_agree_within_the_tolerance() -> None:
    close = compare([453452.36, 2.0], [453452.34, 2.0])  # float64 parent, float32 copy
    assert close.agree and close.compared == 2 and close.differing == 0
    assert close.max_abs_diff == pytest.approx(0.02)
    assert close.mean_abs_diff == pytest.approx(0.01)
    far = compare([1.0, 2.0, 3.0], [1.0, 2.5, 3.0])
    assert not far.agree and far.differing == 1 and far.max_abs_diff == pytest.approx(0.5)
    near_zero = compare([0.0], [ATOL / 2])
    assert near_zero.agree
    relative = compare([1e6], [1e6 * (1 + 2 * RTOL)])
    assert not relative.agree


def test_labels_and_shapes_compare_exactly() -> None:
    assert compare(["a", "b"], ["a", "b"]).agree
    labels = compare(["a", "b"], ["a", "c"])
    assert not labels.agree and labels.max_abs_diff is None and labels.compared == 0
    assert not compare([1.0, 2.0], [[1.0], [2.0]]).agree  # another shape never agrees
    assert compare([[0.1, 0.9]], [[0.1, 0.9000001]]).agree
    assert not compare([1.0], None).agree


def test_a_float32_shadow_of_a_regressor_agrees_and_reports_its_differences(
    tmp_path: Path,
) -> None:
    """Compared exactly, a float32 ONNX copy of a float64 regressor never agreed."""
    pytest.importorskip("skl2onnx")
    import onnx
    from sklearn.linear_model import LinearRegression

    from conveyor.training.optimize.onnx_model import export_onnx

    init_project(tmp_path, name="shadow")
    with (tmp_path / "conveyor.yaml").open("a") as spec:
        spec.write("serving: {auth: disabled}\n")
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"sqft": rng.normal(1500, 400, 200), "age": rng.normal(30, 10, 200)})
    price = 300 * X["sqft"] - 800 * X["age"]
    parent_model = LinearRegression().fit(X, price)
    with Project.open(tmp_path, env={}) as project:
        registry = project.registry
        parent = registry.register("house", parent_model, signature_from=X)
        copy = onnx.load_from_string(export_onnx(parent_model, X.head(20)).data)
        registry.register("house", copy, signature_from=X, parent=parent)  # @2
        registry.register("house", LinearRegression().fit(X, 2 * price), signature_from=X)  # @3
        RouteStore(project.store, project.events, registry).set(
            "house", RoutePolicy.fixed(1, shadow=[2, 3])
        )
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            body = {"records": X.head(4).to_dict(orient="records")}
            url = f"{server.url}/v1/models/house/predict"
            wait_until(
                lambda: httpx.post(url, json=body, timeout=30).status_code == 200,
                message="house@1 answers",
                timeout=30,
            )
            wait_until(
                lambda: (
                    {
                        e.subject_version
                        for e in project.events.query(kind="prediction.shadow").items
                    }
                    >= {"2", "3"}
                ),
                message="both shadows answered",
                timeout=30,
            )
            metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        finally:
            server.stop()
        events = project.events.query(kind="prediction.shadow").items
    by_version = {e.subject_version: e.payload for e in events if e.payload["status"] == "ok"}
    copy_event, other = by_version["2"], by_version["3"]
    assert copy_event["agree"] is True
    assert copy_event["compared"] == 4 and copy_event["differing"] == 0
    assert 0 < copy_event["max_abs_diff"] < 1  # float32 against float64: close, not equal
    assert copy_event["primary_output"] != copy_event["output"]
    assert other["agree"] is False and other["differing"] == 4
    assert other["max_abs_diff"] > 1000 and other["mean_abs_diff"] > 1000
    assert 'conveyor_shadow_abs_diff_count{model="house",version="2"}' in metrics
