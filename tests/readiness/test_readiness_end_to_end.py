"""The readiness report end to end: real traffic and feedback through a real server with
API keys, the report over HTTP with the built-in load test against that server, the role
gate on the load test, and the CLI."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from conveyor.checks.persist import get_report
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project

ENV = {
    "CONVEYOR_SERVING__PAYLOAD_SAMPLE_RATE": "1",  # the load test sends a sampled input
    "CONVEYOR_SLOS__THROUGHPUT_RPS": "40",
    # The classifier answers labels: roc_auc cannot be computed from them (a warning).
    "CONVEYOR_SLOS__QUALITY__METRIC": "accuracy",
    "CONVEYOR_SLOS__QUALITY__FLOOR": "0.9",
    "CONVEYOR_SLOS__LATENCY_P95_MS": "2000",
    "CONVEYOR_SLOS__AVAILABILITY": "0.99",
    "CONVEYOR_READINESS__MIN_REQUESTS": "50",
    "CONVEYOR_READINESS__MIN_LABELLED": "50",
    "CONVEYOR_READINESS__LOAD_TEST__DURATION_S": "1.5",
    "CONVEYOR_READINESS__BUSINESS": '{"baseline": 0.5, "target": 0.8}',
    "CONVEYOR_READINESS__RETENTION_DAYS": "30",
}


def test_readiness_of_a_served_model_with_traffic_and_feedback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.linear_model import LogisticRegression
    from typer.testing import CliRunner

    from conveyor.cli import app
    from conveyor.serving.app import create_app
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy
    from conveyor.serving.server import ThreadedServer
    from conveyor.testing.wait import wait_until

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)  # the CLI below reads the same spec
    init_project(tmp_path, name="shop")
    rng = np.random.default_rng(7)
    X = pd.DataFrame({"a": rng.normal(0, 1, 400), "b": rng.normal(0, 1, 400)})
    y = ((X["a"] - X["b"]) > 0).astype(int)
    with Project.open(tmp_path, env=ENV) as project:
        keys = ApiKeys(project.store, project.events)
        deployer, _ = keys.create("deployer", "deployer")
        viewer, _ = keys.create("dashboard", "viewer")
        caller, _ = keys.create("shop-frontend", "predictor")
        project.registry.register(
            "churn",
            LogisticRegression().fit(X, y),
            signature_from=X,
            metrics={"accuracy": 0.95},  # the hold-out score, shown beside production's
        )
        RouteStore(project.store, project.events, project.registry).set(
            "churn", RoutePolicy.fixed(1)
        )
        project.data.forget("customer_id", 42, actor="key:deployer")  # the deletion drill
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            predict = f"{server.url}/v1/models/churn/predict"
            auth = {"authorization": f"Bearer {caller}"}
            wait_until(
                lambda: (
                    httpx.post(
                        predict, json={"records": [{"a": 0.0, "b": 0.0}]}, headers=auth
                    ).status_code
                    == 200
                ),
                message="churn@1 answers",
                timeout=30,
            )
            with httpx.Client(timeout=30, headers=auth) as client:
                for i in range(100):
                    row = X.iloc[i].to_dict()
                    answer = client.post(
                        predict, json={"records": [row]}, headers={"x-request-id": f"e2e-{i}"}
                    )
                    assert answer.status_code == 200, answer.text
                # Ground truth for each, and the business outcome: 1 when the churn call
                # was right.
                labels = [
                    {"request_id": f"e2e-{i}", "label": int(y.iloc[i]), "value": 1.0}
                    for i in range(100)
                ]
                assert client.post(f"{server.url}/v1/feedback", json=labels).status_code < 300
            wait_until(
                lambda: project.events.count(kind="feedback") >= 100,
                message="feedback recorded",
                timeout=30,
            )
            report_url = f"{server.url}/v1/readiness"
            as_viewer = {"authorization": f"Bearer {viewer}"}
            none_yet = httpx.get(report_url, params={"recorded": "true"}, headers=as_viewer)
            refused = httpx.get(
                report_url,
                params={"load_test": "true"},
                headers={"authorization": f"Bearer {viewer}"},
                timeout=60,
            )
            before = project.events.count(kind="prediction")
            answer = httpx.get(
                report_url,
                params={"load_test": "true"},
                headers={"authorization": f"Bearer {deployer}"},
                timeout=120,
            )
            viewed = httpx.get(report_url, headers=as_viewer, timeout=60)
            recorded = httpx.get(report_url, params={"recorded": "true"}, headers=as_viewer)
        finally:
            server.stop()
        assert none_yet.status_code == 404 and none_yet.json()["code"] == "not_found"
        assert recorded.status_code == 200 and recorded.json()["id"] == viewed.json()["id"]
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items = {i["name"]: i for i in body["items"]}
        load = body["load_test"]
        # 40/s for 1.5 s, every request answered (the load test used the deployer's key
        # and the input rows of a sampled prediction).
        assert load["sent"] == 60 and load["ok"] == 60 and load["statuses"] == {"200": 60}
        assert load["url"].endswith("/v1/models/churn/predict")
        assert project.events.count(kind="prediction") >= before + 60
        assert items["load_test.errors"]["status"] == "pass"
        assert items["load_test.throughput"]["observed"] > 0  # the rate is not asserted
        quality = items["quality.churn"]
        assert quality["status"] == "pass", quality["detail"]
        assert quality["observed"] > 0.9  # accuracy on production feedback
        assert "100 production predictions" in quality["detail"]
        assert "hold-out accuracy of @1: 0.95" in quality["detail"]
        business = items["business.churn"]
        assert business["status"] == "pass" and business["observed"] == 1.0
        assert items["availability.churn"]["status"] == "pass"
        assert items["availability.churn"]["observed"] == 1.0
        assert items["latency.churn"]["status"] == "pass"
        assert items["security.auth"]["status"] == "pass"
        # The deployer and the others have no expiry, but none is admin: the keys pass.
        assert items["security.keys"]["status"] == "pass", items["security.keys"]
        assert items["security.audit"]["status"] == "pass"
        assert items["compliance.deletion"]["status"] == "pass"
        assert items["compliance.retention"]["status"] == "pass"
        assert viewed.status_code == 200
        assert viewed.json()["items"][0]["name"] != "load_test"
        assert {i["name"]: i for i in viewed.json()["items"]}["load_test"]["status"] == "warn"
        saved = get_report(project.store, body["id"])
        assert saved.kind == "readiness" and saved.verdict == body["verdict"]
        reported = project.events.query(kind="readiness.reported").items
        assert [e.actor for e in reported] == ["key:deployer", "key:dashboard"]
        assert reported[0].payload["load_test"] is True
    # The CLI: the same report from the same spec; a viewer may not load-test.
    monkeypatch.setenv("CONVEYOR_API_KEY", viewer)
    shown = CliRunner().invoke(app, ["readiness", "--json", "-C", str(tmp_path)])
    assert shown.exit_code in (0, 3), shown.output
    assert orjson.loads(shown.output)["items"]
    gated = CliRunner().invoke(app, ["readiness", "--load-test", "-C", str(tmp_path)])
    assert gated.exit_code == 1 and "readiness.load_test" in gated.output
