"""Warm-up runs on real rows recorded at registration, so a valid model always loads; a model
that fails its warm-up is refused with its own error, never reported as 'not deployed'."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.registry.signature import Signature
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until


def _frame(n: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    plan = rng.choice(["free", "pro", "team"], size=n)
    amount = rng.normal(size=n)
    return pd.DataFrame({"plan": plan, "amount": amount}), (plan == "pro").astype(int)


def _strict_pipeline(c: float = 1.0) -> object:
    X, y = _frame()
    encode = ColumnTransformer(
        [("plan", OneHotEncoder(handle_unknown="error"), ["plan"])], remainder="passthrough"
    )
    return make_pipeline(encode, LogisticRegression(C=c)).fit(X, y)


def test_the_signature_keeps_a_few_real_rows_as_its_example() -> None:
    X, _ = _frame()
    signature = Signature.infer(X)
    assert 1 <= len(signature.example) <= 5
    assert signature.example[0] == {"plan": X["plan"][0], "amount": X["amount"][0]}
    again = Signature.from_dict(signature.to_dict())
    assert again == signature and again.example == signature.example


def test_a_model_rejecting_synthesized_rows_loads_and_serves(tmp_path: Path) -> None:
    init_project(tmp_path, name="warm")
    with Project.open(tmp_path, env={}) as project:
        X, _ = _frame()
        project.registry.register("strict", _strict_pipeline(), signature_from=X)
        RouteStore(project.store, project.events, project.registry).set(
            "strict", RoutePolicy.fixed(1)
        )
        token, _ = ApiKeys(project.store, project.events).create("app", "predictor")
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            url = f"{server.url}/v1/models/strict/predict"
            body = {"records": [{"plan": "pro", "amount": 0.1}]}

            def answered() -> bool:
                got = httpx.post(url, json=body, headers={"x-api-key": token}, timeout=10)
                return got.status_code == 200

            wait_until(answered, message="the OneHotEncoder pipeline serves", timeout=30)
            ready = httpx.get(f"{server.url}/v2/health/ready", timeout=10)
            assert ready.status_code == 200
        finally:
            server.stop()


def test_a_failed_warm_up_is_the_models_error(tmp_path: Path) -> None:
    """Registered from a frame with no rows, the version has no example: the synthesized
    rows are refused by the encoder, and loading says so with the model's own error."""
    import asyncio

    import pytest

    from conveyor.errors import ModelUnavailableError
    from conveyor.serving.pool import ModelPool
    from conveyor.serving.settings import BatchingSpec

    init_project(tmp_path, name="cold")
    with Project.open(tmp_path, env={}) as project:
        X, _ = _frame()
        version = project.registry.register("strict", _strict_pipeline(), signature_from=X.head(0))
        assert version.signature is not None and "example" not in version.signature
        pool = ModelPool(project.registry, BatchingSpec())
        with pytest.raises(ModelUnavailableError) as caught:
            asyncio.run(pool.ensure("strict", 1))
        message = str(caught.value)
        assert "strict@1 cannot serve" in message and "Found unknown categories" in message
        assert "register it again with signature_from=" in message
        assert caught.value.code == "model_unavailable"


def test_a_tampered_version_is_unavailable_and_no_answer_names_a_path(tmp_path: Path) -> None:
    init_project(tmp_path, name="tampered")
    with (tmp_path / "conveyor.yaml").open("a") as spec:
        spec.write("serving: {auth: disabled}\n")
    with Project.open(tmp_path, env={}) as project:
        X, _ = _frame()
        project.registry.register("strict", _strict_pipeline(), signature_from=X)
        # Another artifact than @1's (identical bytes are stored once).
        version = project.registry.register("strict", _strict_pipeline(0.5), signature_from=X)
        RouteStore(project.store, project.events, project.registry).set(
            "strict", RoutePolicy.fixed(1)
        )
        hex_digest = version.artifact_digest.split(":")[1]
        stored = tmp_path / ".conveyor/artifacts/sha256" / hex_digest[:2] / hex_digest[2:]
        stored.write_bytes(stored.read_bytes() + b"tampered")
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            answer = httpx.post(
                f"{server.url}/v1/models/strict/predict",
                params={"version": 2},
                json={"records": [{"plan": "pro", "amount": 0.1}]},
                timeout=30,
            )
            assert answer.status_code == 503, answer.text
            body = answer.json()
            assert body["code"] == "model_unavailable" and body["reason"] == "artifact_tampered"
            assert str(tmp_path) not in answer.text and "/" not in body["message"]
        finally:
            server.stop()
