"""``conveyor serve`` in a new project: it says how callers get in (the auth mode and the
key to create) and that nothing is deployed, and readiness says so too (503, status
``empty``) until a model has a route; then it is ready."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from conveyor.cli.serving import startup_notes
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.testing.ports import worker_port
from conveyor.testing.wait import wait_until


def _register(root: Path) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    with Project.open(root, env={}) as project:
        project.registry.register("m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X)


def test_serve_says_auth_and_nothing_deployed_and_readiness_agrees(tmp_path: Path) -> None:
    root = tmp_path / "p"
    init_project(root, name="first-serve")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write("serving: {auth: disabled, poll_interval_s: 0.2}\n")
    _register(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    port = worker_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "conveyor.cli", "serve", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    try:

        def readiness() -> httpx.Response | None:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/v2/health/ready", timeout=1)
            except httpx.HTTPError:
                return None

        empty = wait_until(readiness, timeout=60, message=lambda: log.read_text())
        assert empty.status_code == 503, empty.text
        assert empty.json()["status"] == "empty" and not empty.json()["ready"]
        assert "nothing is deployed" in empty.json()["message"]
        assert "conveyor deploy NAME@VERSION" in empty.json()["message"]
        said = log.read_text().splitlines()
        assert said[0].startswith("auth: disabled: anyone may call this server without a key")
        assert "`conveyor keys create admin --role admin`" in said[0]
        assert said[1].startswith("nothing is deployed") and "503" in said[1]

        deployed = subprocess.run(
            [sys.executable, "-m", "conveyor.cli", "deploy", "m@1"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert deployed.returncode == 0, deployed.stderr
        wait_until(
            lambda: (r := readiness()) is not None and r.status_code == 200,
            message="the route reaches the worker and readiness turns 200",
        )
        assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True, "status": "ready"}
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_auth_line_for_each_mode_and_key_state(tmp_path: Path) -> None:
    root = tmp_path / "p"
    init_project(root, name="modes")
    _register(root)
    auth, deployed = startup_notes(root, "required")
    assert auth.startswith("auth: required, and this project has no API key yet")
    assert "`conveyor keys create admin --role admin`" in auth and "401" in auth
    assert deployed.startswith("nothing is deployed")
    with Project.open(root, env={}) as project:
        ApiKeys(project.store, project.events).create("admin", "admin")
        from conveyor.serving.route_store import RouteStore
        from conveyor.serving.routes import RoutePolicy

        RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
    auth, deployed = startup_notes(root, "required")
    assert auth.startswith("auth: required: every request needs a key")
    assert "`conveyor keys create NAME --role predictor`" in auth
    assert deployed == "serving: m (revision 1: fixed: v1)"
    auth, _ = startup_notes(root, "disabled")
    assert auth.startswith("auth: disabled, but this project has API keys")
