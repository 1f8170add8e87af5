"""The server's Prometheus series the generated rules and dashboard read: failed
predictions per model with their HTTP status, shed load, and the serving processes' CPU
and memory (conveyor.monitoring.interop.names maps each monitor onto them)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedServer]:
    from sklearn.linear_model import LinearRegression

    init_project(tmp_path, name="series")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write("serving: {auth: disabled, batching: {max_batch_size: 2, max_queue: 4}}\n")
        # Latency thresholds become bucket bounds of the latency histogram.
        f.write("slos: {latency_p95_ms: 120}\n")
        f.write(
            "monitoring: {alerts: {rules: [{name: p99, metric: latency_p99_ms, window: 5m, "
            "op: '>', threshold: 37}]}}\n"
        )
    with Project.open(tmp_path, env={}) as project:
        X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 2.0]})
        project.registry.register("m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X)
        RouteStore(project.store, project.events, project.registry).set(
            "m", RoutePolicy.fixed(1), actor="test"
        )
        with ThreadedServer(create_app(project)) as running:
            yield running


def _samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _sum(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        value
        for n, have, value in samples
        if n == name and all(have.get(k) == v for k, v in labels.items())
    )


def test_failures_shed_load_and_processes_are_series(
    server: ThreadedServer,
) -> None:
    url = f"{server.url}/v1/models"
    row = {"a": 1.0, "b": 2.0}
    answers = [
        httpx.post(f"{url}/m/predict", json={"records": [row]}, timeout=10).status_code
        for _ in range(3)
    ]
    # More rows than the batch queue can ever hold: shed (503 overloaded).
    answers.append(httpx.post(f"{url}/m/predict", json={"records": [row] * 5}).status_code)
    # A version the registry does not hold: 404, before any version was chosen.
    answers.append(
        httpx.post(f"{url}/m/predict", json={"records": [row]}, params={"version": 9}).status_code
    )
    # A column missing: 422, after the version was chosen.
    answers.append(httpx.post(f"{url}/m/predict", json={"records": [{"a": 1.0}]}).status_code)
    # A model nobody serves: 404, and no series for a name taken from a URL.
    answers.append(httpx.post(f"{url}/ghost/predict", json={"records": [row]}).status_code)
    assert answers == [200, 200, 200, 503, 404, 422, 404]

    samples = _samples(server.url)
    requests = "conveyor_requests_total"
    assert _sum(samples, requests, model="m", status="ok", version="1") == 3
    assert _sum(samples, requests, model="m", status="503", version="1", arm="v1") == 1
    assert _sum(samples, requests, model="m", status="404", version="", arm="") == 1
    assert _sum(samples, requests, model="m", status="422", version="1") == 1
    assert _sum(samples, requests, model="m") == 6
    shed = "conveyor_shed_requests_total"
    assert _sum(samples, shed, model="m", version="1", arm="v1") == 1
    assert _sum(samples, shed) == 1
    assert not [s for s in samples if s[1].get("model") == "ghost"]

    # The SLO's and the alert rule's latency thresholds are bucket bounds: Prometheus'
    # quantile is above each exactly when fewer requests than the quantile are under it.
    bounds = {
        labels["le"]
        for n, labels, _ in samples
        if n == "conveyor_request_seconds_bucket" and labels.get("model") == "m"
    }
    assert {"0.12", "0.037", "0.1", "0.25", "+Inf"} <= bounds

    # The serving process's CPU time and memory (the server runs in this process).
    me = str(os.getpid())
    cpu = [
        (labels["pid"], v) for n, labels, v in samples if n == "conveyor_process_cpu_seconds_total"
    ]
    rss = [
        (labels["pid"], v)
        for n, labels, v in samples
        if n == "conveyor_process_resident_memory_bytes"
    ]
    assert [pid for pid, _ in cpu] == [me] and cpu[0][1] > 0
    assert [pid for pid, _ in rss] == [me] and rss[0][1] > 10 * 2**20


def test_workers_are_found_by_their_files_and_their_parent(tmp_path: Path) -> None:
    """In multiprocess mode, the processes measured are those that wrote a metrics file and
    share this process's parent; a file of a pid that is not a sibling is skipped."""
    from conveyor.web.metrics import _Processes

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # A child of this process, not a sibling: not one of the server's workers.
        (tmp_path / f"counter_{child.pid}.db").write_bytes(b"")
        (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
        (tmp_path / "histogram_1.db").write_bytes(b"")  # init, never a worker here
        (tmp_path / "counter_999999999.db").write_bytes(b"")  # gone
        families = {f.name: f for f in _Processes(str(tmp_path)).collect()}
        pids = {s.labels["pid"] for s in families["conveyor_process_cpu_seconds"].samples}
        assert pids == {str(os.getpid())}
        memory = families["conveyor_process_resident_memory_bytes"].samples
        assert [s.labels["pid"] for s in memory] == [str(os.getpid())]
    finally:
        child.kill()
        child.wait()
