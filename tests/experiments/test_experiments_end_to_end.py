"""End to end against the real model server (in a thread): an A-A experiment started
over HTTP splits the route with sticky assignment; real predictions and feedback posted
to ``POST /v1/feedback`` make a report that passes the SRM check and says keep running
(no difference); an arm on a missing version is refused; flags over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
from experiment_support import make_project

from conveyor.governance.keys import ApiKeys
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.server import ThreadedServer

START = {
    "name": "aa",
    "model": "m",
    "arms": {"control": 1, "treatment": 2},  # two versions of the same function
    "metric": "conversion",
    "baseline": 0.10,
    "mde": 0.02,
    # p95_latency is judged in-process (test_experiments): a server in a thread on a
    # shared machine loads the second version on its first request, a latency artefact
    "guardrails": ["error_rate"],
}


def _predict(client: httpx.Client, url: str, user: str, rng: np.random.Generator) -> dict:
    a, b = rng.normal(size=2)
    reply = client.post(
        f"{url}/v1/models/m/predict",
        json={"records": [{"a": a, "b": b}]},
        headers={"x-user-id": user},
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_an_aa_experiment_through_the_real_server(tmp_path: Path) -> None:
    with make_project(tmp_path) as project:
        keys = ApiKeys(project.store, project.events)
        deployer = {"x-api-key": keys.create("ops", "deployer")[0]}
        viewer = {"x-api-key": keys.create("look", "viewer")[0]}
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            url = server.url
            with httpx.Client(headers=deployer, timeout=30) as client:
                # refusals: the role, then an arm on a version that does not exist
                assert (
                    httpx.post(f"{url}/v1/experiments", json=START, headers=viewer).status_code
                    == 403
                )
                missing = client.post(
                    f"{url}/v1/experiments",
                    json={**START, "arms": {"control": 1, "treatment": 7}},
                )
                assert missing.status_code == 404 and missing.json()["code"] == "not_found"
                assert "m@7" in missing.json()["message"]
                assert client.get(f"{url}/v1/experiments").json()["items"] == []

                started = client.post(f"{url}/v1/experiments", json=START)
                assert started.status_code == 201, started.text
                assert started.json()["design"]["planned_n"] == 4103

                rng = np.random.default_rng(7)
                deadline = time.monotonic() + 30
                while _predict(client, url, "warm", rng)["arm"] not in ("control", "treatment"):
                    assert time.monotonic() < deadline, "the server never applied the route"
                    time.sleep(0.1)

                arms: dict[str, str] = {}
                feedback = []
                for i in range(600):
                    user = f"user-{i % 300}"  # each user comes twice
                    answer = _predict(client, url, user, rng)
                    assert arms.setdefault(user, answer["arm"]) == answer["arm"]  # sticky
                    # conversion independent of the arm: an A-A test
                    feedback.append(
                        {"request_id": answer["request_id"], "label": int(rng.random() < 0.1)}
                    )
                posted = client.post(f"{url}/v1/feedback", json=feedback)
                assert posted.status_code in (200, 201, 202), posted.text
                project.events.flush()

                assert (
                    httpx.post(f"{url}/v1/experiments/aa/report", headers=viewer).status_code == 403
                )
                looked = httpx.get(f"{url}/v1/experiments/aa/report", headers=viewer)
                assert looked.status_code == 200 and "report_id" not in looked.json()
                body = client.post(f"{url}/v1/experiments/aa/report").json()
                assert body["recommendation"] == "keep running", body["reason"]
                assert not body["srm"]["mismatch"], body["srm"]
                primary = body["primary"]
                counted = primary["control"]["n"] + primary["treatment"]["n"]
                assert counted >= 600  # and the warm-up requests that found the split
                assert primary["control"]["n"] > 200 and primary["treatment"]["n"] > 200
                low, high = primary["sequential"]["ci"]
                assert low < 0 < high  # no difference
                assert body["report"]["kind"] == "experiment" and body["report"]["passed"]
                assert [g["worse"] for g in body["guardrails"]] == [False]

                # flags over HTTP: create, kill (one route revision), and the audit trail
                flag = client.post(
                    f"{url}/v1/flags",
                    json={
                        "model": "m",
                        "name": "beta",
                        "version": 3,
                        "match": {"group": "beta"},
                        "percent": 100,
                    },
                )
                assert flag.status_code == 201, flag.text
                routes = RouteStore(project.store, None)
                before = routes.get("m").revision
                killed = client.post(f"{url}/v1/flags/m/beta/kill", json={"reason": "test"})
                assert killed.json()["state"] == "killed"
                assert routes.get("m").revision == before + 1
                assert routes.get("m").policy.flags == []
                shown = httpx.get(f"{url}/v1/flags/m/beta", headers=viewer).json()
                assert [h["action"] for h in shown["history"]] == ["kill", "create"]
                assert shown["history"][0]["actor"] == "key:ops"

                stopped = client.post(f"{url}/v1/experiments/aa/stop", json={"reason": "a-a"})
                assert stopped.json()["status"] == "stopped"
                assert routes.get("m").policy.serving_versions() == (1,)
        finally:
            server.stop()
