"""Models the server tests register (importable by module name, so they unpickle)."""

from __future__ import annotations

import time
from typing import Any

from conveyor.registry import PythonModel


class Slow(PythonModel):
    """Sums the row, after ``seconds``: long enough to be caught in flight."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, frame: Any) -> Any:
        time.sleep(self.seconds)  # slow on purpose: the behaviour under test
        return frame.sum(axis=1).to_numpy()


class SlowMarked(Slow):
    """:class:`Slow` that first leaves a file in ``folder``: a test sees the call begin."""

    def __init__(self, seconds: float, folder: str) -> None:
        super().__init__(seconds)
        self.folder = folder

    def predict(self, frame: Any) -> Any:
        import os
        import uuid

        with open(os.path.join(self.folder, uuid.uuid4().hex), "w"):
            pass
        return super().predict(frame)


def linear_project(
    root: Any,
    *,
    name: str,
    serving: str = "",
    scales: tuple[float, ...] = (1.0,),
    policy: Any = None,
    backends: dict[str, str] | None = None,
) -> Any:
    """A project at ``root`` whose model ``m`` (y = scale * (a + b), one version per scale) is
    routed (``policy``, default all traffic to @1); ``serving`` is the spec's serving section,
    ``backends`` replaces seams' URLs (``{"cache": "redis://..."}``)."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.project import Project, init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    init_project(root, name=name)
    if backends:
        import re

        path = root / "conveyor.yaml"
        text = path.read_text()
        for seam, url in backends.items():
            text, found = re.subn(rf"(?m)^  {seam}: .*$", f"  {seam}: '{url}'", text)
            assert found == 1, seam
        path.write_text(text)
    if serving:
        with (root / "conveyor.yaml").open("a") as spec:
            spec.write(f"serving: {serving}\n")
    project = Project.open(root, env={})
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    for scale in scales:
        project.registry.register(
            "m", LinearRegression().fit(X, scale * X.sum(axis=1)), signature_from=X
        )
    RouteStore(project.store, project.events, project.registry).set(
        "m", policy if policy is not None else RoutePolicy.fixed(1)
    )
    return project


def wait_served(url: str, headers: dict[str, str] | None = None) -> None:
    """Until the server at ``url`` says model ``m`` is ready (its route reached the worker)."""
    import httpx

    from conveyor.testing.wait import wait_until

    wait_until(
        lambda: (
            httpx.get(f"{url}/v2/models/m/ready", headers=headers, timeout=10).status_code == 200
        ),
        message="the route reaches the worker",
    )


def conveyor_serve(
    root: Any, *args: str, env: dict[str, str] | None = None, log: Any = None
) -> tuple[Any, int]:
    """``conveyor serve`` of the project at ``root`` in its own process, on a free port,
    with ``env`` over the environment (any other CONVEYOR_ variable removed): the process
    and its port. Its output goes to the file at ``log`` when given, else nowhere. The
    caller waits for it and stops it."""
    import os
    import subprocess
    import sys

    from conveyor.testing.ports import worker_port

    port = worker_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    environment.update(env or {})
    # the child keeps its own copy of the file's descriptor: this process closes its one
    out = (
        subprocess.DEVNULL
        if log is None
        else os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    )
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "conveyor.cli", "serve", "--port", str(port), *args],
            env=environment,
            stdout=out,
            stderr=subprocess.DEVNULL if log is None else subprocess.STDOUT,
        )
    finally:
        if log is not None:
            os.close(out)
    return process, port
