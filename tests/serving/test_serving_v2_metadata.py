"""Open Inference Protocol metadata declares the outputs infer really returns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_models import Probabilities
from sklearn.linear_model import LinearRegression, LogisticRegression

from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    init_project(tmp_path, name="meta")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write("serving: {auth: disabled}\n")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(80, 2)), columns=["a", "b"])
    with Project.open(tmp_path) as project:
        registry = project.registry
        registry.register("labels", LogisticRegression().fit(X, X["a"] > 0), signature_from=X)
        registry.register("amounts", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X)
        registry.register("probabilities", Probabilities(), signature_from=X)
        routes = RouteStore(project.store, project.events, registry)
        for name in ("labels", "amounts", "probabilities"):
            routes.set(name, RoutePolicy.fixed(1))
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("labels", {"name": "predict", "datatype": "BOOL", "shape": [-1]}),
        ("amounts", {"name": "predict", "datatype": "FP64", "shape": [-1]}),
        ("probabilities", {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}),
    ],
)
def test_metadata_outputs_are_what_infer_returns(url: str, model: str, expected: dict) -> None:  # type: ignore[type-arg]
    meta = httpx.get(f"{url}/v2/models/{model}", timeout=10).json()
    assert meta["outputs"] == [expected]
    body = {"inputs": [{"name": "x", "shape": [4, 2], "datatype": "FP64", "data": [0.1] * 8}]}
    answer = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=10).json()
    (output,) = answer["outputs"]
    assert output["name"] == expected["name"] and output["datatype"] == expected["datatype"]
    assert len(output["shape"]) == len(expected["shape"])
    assert output["shape"][1:] == expected["shape"][1:] and output["shape"][0] == 4
