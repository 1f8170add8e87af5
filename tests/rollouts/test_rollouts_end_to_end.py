"""End to end against the real model server (in a thread), real requests and the
monitoring query layer: a candidate that fails on some inputs is rolled back at its
first step; a good one is promoted. Started and watched over /v1/rollouts."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from rollout_models import Flaky
from rollout_support import make_project, passed_gates

from conveyor.governance.keys import ApiKeys
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer

SPEC = """
rollouts:
  defaults:
    interval: 2s
    # latency is judged by the simulations; a server in a thread on a busy CI machine
    # is not the place to hold it to a tight limit
    analysis: {min_requests: 25, max_p95_ms: 10000, max_latency_increase: 10.0}
"""


def _drive(project, client: httpx.Client, url: str, ref: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for _ in range(30):
            a, b = rng.normal(size=2)
            client.post(f"{url}/v1/models/m/predict", json={"records": [{"a": a, "b": b}]})
        project.events.flush()
        project.rollouts.tick("e2e")
        found = client.get(f"{url}/v1/rollouts/{ref}").json()
        if found["status"] not in ("running", "paused"):
            return found
    raise AssertionError("the rollout did not end in 120 s")


def test_a_bad_candidate_is_rolled_back_and_a_good_one_promoted(tmp_path: Path) -> None:
    with make_project(tmp_path, versions=2, spec=SPEC) as project:
        X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
        from sklearn.linear_model import LinearRegression

        # v2 (y = 2 (a + b)) stays unused; v3 fails on some inputs; v4 is v1 retrained
        flaky = project.registry.register("m", Flaky(), signature_from=X)
        good = project.registry.register(
            "m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X
        )
        passed_gates(project, "m", flaky.number)
        passed_gates(project, "m", good.number)
        keys = ApiKeys(project.store, project.events)
        deployer = {"x-api-key": keys.create("ops", "deployer")[0]}
        viewer = {"x-api-key": keys.create("look", "viewer")[0]}
        RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            with httpx.Client(headers=deployer, timeout=30) as client:
                url = server.url
                refused = httpx.post(
                    f"{url}/v1/rollouts", json={"model": "m", "version": 3}, headers=viewer
                )
                assert refused.status_code == 403
                started = client.post(
                    f"{url}/v1/rollouts", json={"model": "m", "version": 3, "steps": "50,100"}
                )
                assert started.status_code == 201, started.text
                bad = _drive(project, client, url, started.json()["id"], seed=1)
                assert bad["status"] == "rolled_back" and bad["step"] == 0
                assert bad["reason"].startswith("error_rate"), bad["reason"]
                assert RouteStore(project.store, None).get("m").policy == RoutePolicy.fixed(1)

                again = client.post(
                    f"{url}/v1/rollouts", json={"model": "m", "version": 4, "steps": "50,100"}
                )
                assert again.status_code == 201, again.text
                conflict = client.post(f"{url}/v1/rollouts", json={"model": "m", "version": 3})
                assert conflict.status_code == 409 and again.json()["id"] in conflict.text
                good = _drive(project, client, url, again.json()["id"], seed=2)
                assert good["status"] == "promoted", good["reason"]
                assert len(good["reports"]) == 2
                assert project.registry.aliases("m")["champion"] == 4
                listed = httpx.get(f"{url}/v1/rollouts", headers=viewer).json()["items"]
                assert [r["status"] for r in listed] == ["promoted", "rolled_back"]
        finally:
            server.stop()


def test_the_server_runs_the_controller_when_the_spec_says_so(tmp_path: Path) -> None:
    spec = SPEC + "  controller: {in_server: true, poll_s: 0.2, lease_s: 5}\n"
    with make_project(tmp_path, versions=2, spec=spec) as project:
        passed_gates(project, "m", 2)
        started = project.rollouts.start("m", 2, actor="ana", steps="10,100", interval="1h")
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            from conveyor.testing.wait import wait_until

            wait_until(
                lambda: project.rollouts.get(started.id).step_started_at is not None,
                timeout=30,
                message="the server's controller applies the first step",
            )
            found = project.rollouts.get(started.id)
            assert found.lease_holder is not None and found.lease_holder.startswith("server:")
            weights = {
                a.version: a.weight
                for a in RouteStore(project.store, None).get("m").policy.versions
            }
            assert weights == {1: 90.0, 2: 10.0}
        finally:
            server.stop()
