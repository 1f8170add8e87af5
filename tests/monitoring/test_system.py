"""System monitors from real traffic through the real server: answered requests, bad input
(4xx), a model that raises (5xx), requests for an unknown model; the server's own samples
of its CPU, memory and queues. Counts and rates come back equal to what was sent, from the
columnar copy and the log's tail, through Python, HTTP and the CLI.

On SQLite and PostgreSQL (the ``backends`` fixture). Requests are sent one at a time, so a
batch never mixes a failing request with others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from conveyor.errors import InvalidInputError
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until

SPEC = """
serving: {auth: %s, poll_interval_s: 0.2, cache: true}
monitoring:
  system: {sample_interval_s: 0.2}
"""

#: What the traffic sends: answered, 422 (a column missing), 400 (not JSON), 500 (the model
#: raises), 404 (a model nobody deployed).
SENT = {"ok": 23, "again": 7, "missing_column": 5, "not_json": 3, "boom": 4, "unknown": 2}


def _project(root: Path, backends: dict[str, str], auth: str) -> Project:
    from system_support import Boom

    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    init_project(root, name="watched")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(SPEC % auth)
    project = Project.open(root, env=backends)
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 2)), columns=["a", "b"])
    project.registry.register("m", Boom(), signature_from=frame)
    RouteStore(project.store, project.events, project.registry).set(
        "m", RoutePolicy.fixed(1), actor="test"
    )
    return project


@pytest.fixture
def served(tmp_path: Path, backends: dict[str, str]) -> Iterator[tuple[Project, str]]:
    project = _project(tmp_path / "proj", backends, "disabled")
    server = ThreadedServer(create_app(project))
    server.start()
    try:
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/models/m/ready").status_code == 200,
            message="m is served",
        )
        yield project, server.url
    finally:
        server.stop()
        project.close()


def send_traffic(url: str, headers: dict[str, str] | None = None) -> None:
    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:

        def post(path: str, expect: int, **kw: Any) -> None:
            answer = client.post(path, **kw)
            assert answer.status_code == expect, answer.text

        for i in range(SENT["ok"]):
            post("/v1/models/m/predict", 200, json={"records": [{"a": float(i), "b": 1.0}]})
        for _ in range(SENT["again"]):  # the same input again: answered from the cache
            post("/v1/models/m/predict", 200, json={"records": [{"a": 0.0, "b": 1.0}]})
        for _ in range(SENT["missing_column"]):
            post("/v1/models/m/predict", 422, json={"records": [{"a": 1.0}]})
        for _ in range(SENT["not_json"]):
            post("/v1/models/m/predict", 400, content=b"{not json")
        for _ in range(SENT["boom"]):
            post("/v1/models/m/predict", 500, json={"records": [{"a": 666.0, "b": 1.0}]})
        for _ in range(SENT["unknown"]):
            post("/v1/models/nobody/predict", 404, json={"records": [{"a": 1.0, "b": 1.0}]})


def wait_written(project: Project, samples: int = 2) -> None:
    answered = SENT["ok"] + SENT["again"]
    failed = sum(SENT.values()) - answered
    events = project.events

    def written() -> bool:
        events.flush()
        return (
            events.count(kind="prediction") >= answered
            and events.count(kind="prediction.failed") >= failed
            and events.count(kind="serving.sample") >= samples
        )

    wait_until(written, message="the traffic's events and two samples are written")


def test_counts_and_rates_equal_the_traffic_sent(served: tuple[Project, str]) -> None:
    from conveyor.monitoring import compact

    project, url = served
    since = datetime.now(UTC) - timedelta(seconds=1)
    send_traffic(url)
    wait_written(project)
    # Half from the copy, half from the tail: compact what is there, then more samples come.
    compact(project)
    wait_written(project, samples=project.events.count(kind="serving.sample") + 1)
    until = datetime.now(UTC) + timedelta(seconds=1)

    report = project.monitoring.system(since=since, until=until, window=timedelta(hours=1))
    assert report.snapshot.files and report.snapshot.tail_events  # both parts were read
    rows = {(w["model"], w["version"], w["arm"]): w for w in report.windows}
    answered = SENT["ok"] + SENT["again"]
    # A body that is not JSON is refused before a version is chosen; a row missing a column
    # is refused by the chosen version's signature; a model that raises had been chosen.
    served_row = rows[("m", "1", "v1")]
    failed_here = SENT["missing_column"] + SENT["boom"]
    assert served_row["answered"] == answered
    assert served_row["errors_5xx"] == SENT["boom"]
    assert served_row["errors_4xx"] == SENT["missing_column"]
    assert served_row["requests"] == answered + failed_here
    assert served_row["cached"] == SENT["again"]  # the first row (0.0, 1.0) was computed
    assert served_row["cache_hit_ratio"] == pytest.approx(SENT["again"] / answered)
    assert served_row["error_rate"] == pytest.approx(failed_here / (answered + failed_here))
    assert served_row["server_error_rate"] == pytest.approx(SENT["boom"] / (answered + failed_here))
    assert served_row["availability"] == pytest.approx(1 - SENT["boom"] / (answered + failed_here))
    unrouted = rows[("m", None, None)]
    assert unrouted["errors_4xx"] == unrouted["requests"] == SENT["not_json"]
    assert unrouted["answered"] == 0 and unrouted["p50_ms"] is None
    assert rows[("nobody", None, None)]["errors_4xx"] == SENT["unknown"]

    summary = project.monitoring.system(
        "m", since=since, until=until, window=timedelta(hours=1)
    ).windows
    total = sum(w["requests"] for w in summary)
    assert total == sum(SENT.values()) - SENT["unknown"]

    from conveyor.monitoring.system_query import METRICS

    failed = SENT["missing_column"] + SENT["not_json"] + SENT["boom"]
    rate = METRICS["error_rate"](project, "m", since, until)
    assert rate == pytest.approx(failed / total)
    assert METRICS["availability"](project, "m", since, until) == pytest.approx(
        1 - SENT["boom"] / total
    )
    assert METRICS["shed_rate"](project, "m", since, until) == 0.0
    assert METRICS["error_rate"](project, "nobody-at-all", since, until) is None

    # The server sampled itself: this process (ThreadedServer runs in it).
    assert report.processes and {p["pid"] for p in report.processes} == {os.getpid()}
    assert all(p["rss_mib"] > 10 and p["cpu_percent"] >= 0 for p in report.processes)
    assert sum(p["batches"] for p in report.processes) >= 1
    assert served_row["rss_mib"] is not None and served_row["queue_depth"] is not None
    assert served_row["mean_batch_rows"] == pytest.approx(1.0)  # one row per request

    # The failed events say what failed and how.
    failures = project.monitoring.sql(
        "SELECT status, code, count(*) FROM events GROUP BY ALL ORDER BY ALL",
        kinds=["prediction.failed"],
        since=since,
        until=until,
    ).to_pylist()
    assert {(f["status"], f["code"]): f["count_star()"] for f in failures} == {
        ("400", "invalid_input"): SENT["not_json"],
        ("404", "not_found"): SENT["unknown"],
        ("422", "invalid_input"): SENT["missing_column"],
        ("500", "internal"): SENT["boom"],
    }

    # HTTP and the overview say the same.
    body = httpx.get(
        f"{url}/v1/monitor/system",
        params={
            "model": "m",
            "since": since.isoformat(),
            "until": until.isoformat(),
            "window": "1h",
        },
        timeout=30,
    ).json()
    assert sorted(w["requests"] for w in body["windows"]) == sorted(w["requests"] for w in summary)
    overview = httpx.get(
        f"{url}/v1/monitor/overview",
        params={"since": since.isoformat(), "until": until.isoformat()},
        timeout=30,
    ).json()
    assert sum(m["requests"] for m in overview["models"]) == sum(SENT.values())
    assert overview["processes"][0]["pid"] == os.getpid()


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)
def test_cli_once_and_roles(tmp_path: Path, backends: dict[str, str]) -> None:
    from typer.testing import CliRunner

    from conveyor.cli import app

    project = _project(tmp_path / "proj", backends, "required")
    viewer, _ = project.keys.create("watcher", "viewer")
    predictor, _ = project.keys.create("caller", "predictor")
    server = ThreadedServer(create_app(project))
    server.start()
    try:
        headers = {"authorization": f"Bearer {predictor}"}
        wait_until(
            lambda: (
                httpx.get(f"{server.url}/v2/models/m/ready", headers=headers).status_code == 200
            ),
            message="m is served",
        )
        send_traffic(server.url, headers)
        refused = httpx.post(
            f"{server.url}/v1/models/m/predict", json={"records": [{"a": 1.0, "b": 1.0}]}
        )
        assert refused.status_code == 401, refused.text
        wait_written(project)
        failed = sum(SENT.values()) - SENT["ok"] - SENT["again"]
        wait_until(
            lambda: (
                project.events.flush() or project.events.count(kind="prediction.failed") > failed
            ),
            message="the refusal is recorded",
        )
        unauthenticated = project.monitoring.sql(
            "SELECT count(*) AS n FROM events WHERE status = '401' AND code = 'unauthenticated'",
            kinds=["prediction.failed"],
            since=datetime.now(UTC) - timedelta(hours=1),
        )
        assert unauthenticated.column("n")[0].as_py() == 1
        # Monitors are read by a viewer; nobody without a key.
        for path in ("/v1/monitor/system", "/v1/monitor/data", "/v1/monitor/overview"):
            anonymous = httpx.get(f"{server.url}{path}", timeout=30)
            assert anonymous.status_code == 401, anonymous.text
            seen = httpx.get(
                f"{server.url}{path}", headers={"authorization": f"Bearer {viewer}"}, timeout=30
            )
            assert seen.status_code == 200, seen.text
        bad = httpx.get(
            f"{server.url}/v1/monitor/system",
            params={"window": "soon"},
            headers={"authorization": f"Bearer {viewer}"},
            timeout=30,
        )
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_input", bad.text
        openapi = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
        assert {"/v1/monitor/system", "/v1/monitor/data", "/v1/monitor/overview"} <= set(
            openapi["paths"]
        )
    finally:
        server.stop()

    env = {**backends, "CONVEYOR_API_KEY": viewer}
    result = CliRunner().invoke(
        app, ["monitor", "m", "--once", "--window", "1h", "-C", str(project.root)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "v1" in result.output and "req/s" in result.output
    result = CliRunner().invoke(
        app, ["monitor", "--once", "--json", "-C", str(project.root)], env=env
    )
    assert result.exit_code == 0, result.output
    import json

    body = json.loads(result.output)
    answered = SENT["ok"] + SENT["again"]
    assert sum(w["answered"] for w in body["windows"]) == answered
    # The group's other commands still work.
    result = CliRunner().invoke(
        app, ["monitor", "latency", "m", "--json", "-C", str(project.root)], env=env
    )
    assert result.exit_code == 0, result.output
    project.close()


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)
def test_bad_arguments_get_typed_errors(project: Project) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidInputError):
        project.monitoring.system(since=now, until=now - timedelta(hours=1))
    with pytest.raises(InvalidInputError):
        project.monitoring.system(since=now - timedelta(hours=1), window=timedelta(0))
    with pytest.raises(InvalidInputError):
        project.monitoring.data_quality(since=now - timedelta(hours=1), window=timedelta(0))
    empty = project.monitoring.system(since=now - timedelta(hours=1))
    assert empty.windows == [] and empty.processes == [] and empty.notes


def _failed(n: int, start: datetime, code: str, status: int) -> list[Any]:
    from conveyor.events.schema import Event

    return [
        Event(
            "prediction.failed",
            subject="m",
            subject_version="1",
            time=start + timedelta(seconds=i),
            payload={
                "status": status,
                "code": code,
                "version_id": "v-1",
                "arm": "v1",
                "latency_ms": 1.5,
            },
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)
def test_files_written_before_code_was_promoted_are_read_with_new_ones(project: Project) -> None:
    """A Parquet file of the copy written before ``code`` was a column (so without it) is
    read beside newer files and the tail: its rows have no code, nothing else changes."""
    import pyarrow.parquet as pq
    from monitoring_support import listed_files

    from conveyor.monitoring import compact

    start = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
    project.events.append_many(_failed(6, start, "overloaded", 503))
    project.events.flush()
    compact(project)
    (old,) = listed_files(project)
    path = Path(project.artifacts.root) / old
    pq.write_table(pq.read_table(path).drop_columns(["code"]), path)  # as an old compactor did
    from conveyor.monitoring.rollups import rollup_path

    (Path(project.artifacts.root) / rollup_path(old)).unlink()  # which wrote no rollup either
    project.events.append_many(_failed(4, start + timedelta(minutes=10), "overloaded", 503))
    project.events.flush()
    compact(project)  # a new file, with the column
    project.events.append_many(_failed(3, start + timedelta(minutes=20), "invalid_input", 422))
    project.events.flush()  # the tail

    report = project.monitoring.system(
        since=start, until=start + timedelta(hours=1), window=timedelta(hours=1)
    )
    (row,) = report.windows
    assert report.snapshot.tail_events >= 3 and len(report.snapshot.files) == 2
    assert row["requests"] == 13 and row["errors_5xx"] == 10 and row["errors_4xx"] == 3
    assert row["shed"] == 4  # the old file's rows have no code to say they were shed
    assert row["answered"] == 0 and row["availability"] == pytest.approx(1 - 10 / 13)


@pytest.mark.slow
def test_each_worker_of_conveyor_serve_samples_itself(tmp_path: Path) -> None:
    """``conveyor serve --workers 2``: each worker process records its own samples (its pid),
    and failures on the v2 protocol's route are recorded like the native route's."""
    import signal
    import subprocess
    import sys

    from sklearn.linear_model import LinearRegression

    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy
    from conveyor.testing.ports import worker_port

    root = tmp_path / "proj"
    init_project(root, name="workers")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(SPEC % "disabled")
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 2)), columns=["a", "b"])
    with Project.open(root, env={}) as project:
        project.registry.register(
            "m", LinearRegression().fit(frame, frame.sum(axis=1)), signature_from=frame
        )
        RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
    port = worker_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "serve", "--port", str(port), "--workers", "2",
         "-C", str(root)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    since = datetime.now(UTC) - timedelta(seconds=1)

    def ready() -> bool:
        assert process.poll() is None, "conveyor serve exited"
        try:
            return httpx.get(f"{url}/v2/models/m/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, message="conveyor serve is ready", timeout=60)
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(20):
                answer = client.post(
                    "/v1/models/m/predict", json={"records": [{"a": float(i), "b": 0.5}]}
                )
                assert answer.status_code == 200, answer.text
            bad = client.post("/v2/models/m/infer", json={"inputs": "not a list"})
            assert 400 <= bad.status_code < 500, bad.text

        def two_workers_sampled() -> bool:
            with Project.open(root, env={}) as project:
                found = project.monitoring.sql(
                    "SELECT count(DISTINCT json_extract(payload, '$.pid')) AS n FROM events",
                    kinds=["serving.sample"],
                    since=since,
                )
                return bool(found.column("n")[0].as_py() >= 2)

        wait_until(two_workers_sampled, message="both workers sample themselves", timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)

    with Project.open(root, env={}) as project:
        report = project.monitoring.system("m", since=since, window=timedelta(hours=1))
    assert sum(w["answered"] for w in report.windows) == 20
    assert sum(w["errors_4xx"] for w in report.windows) == 1
    pids = {p["pid"] for p in report.processes}
    assert len(pids) == 2 and process.pid not in pids  # the workers, not the supervisor
    assert all(p["rss_mib"] > 10 for p in report.processes)


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)
def test_a_process_without_a_model_server_samples_its_cpu_and_memory(project: Project) -> None:
    import asyncio

    from conveyor.monitoring.system import Sampler

    first = Sampler(project, None, 5.0).sample()
    assert first["pid"] == os.getpid() and first["rss_mib"] > 10 and first["threads"] >= 1
    assert first["versions"] == [] and first["queue_depth"] == 0 and first["failed"] == {}
    off = Sampler(project, None, 0)
    asyncio.run(off.start())  # 0 turns sampling off: no task, no event
    asyncio.run(off.stop())
    assert off.samples == 0
    project.events.flush()
    assert project.events.count(kind="serving.sample") == 1


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)
def test_shed_load_is_counted_as_the_clients_saw_it(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """A one-row queue held by a request in the model: every request meanwhile is refused
    with 503 overloaded, and the monitors count exactly those as shed."""
    import threading

    import system_support
    from system_support import Hold

    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    root = tmp_path / "proj"
    init_project(root, name="shedding")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(
            "serving: {auth: disabled, cache: false, batching: {max_batch_size: 1, max_queue: 1}}\n"
        )
    system_support.STARTED.clear()
    system_support.RELEASE.clear()
    since = datetime.now(UTC) - timedelta(seconds=1)
    with Project.open(root, env=backends) as project:
        frame = pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, 1.0]})
        project.registry.register("m", Hold(), signature_from=frame)
        RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
        server = ThreadedServer(create_app(project))
        server.start()
        statuses: list[int] = []
        try:
            wait_until(
                lambda: httpx.get(f"{server.url}/v2/models/m/ready").status_code == 200,
                message="m is served",
            )
            held = threading.Thread(
                target=lambda: statuses.append(
                    httpx.post(
                        f"{server.url}/v1/models/m/predict",
                        json={"records": [{"a": 7.0, "b": 0.0}]},
                        timeout=60,
                    ).status_code
                )
            )
            held.start()
            assert system_support.STARTED.wait(30), "the held request reached the model"
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for i in range(3):
                    answer = client.post(
                        "/v1/models/m/predict", json={"records": [{"a": float(i), "b": 0.0}]}
                    )
                    assert answer.status_code == 503, answer.text
                    assert answer.json()["code"] == "overloaded"
                    statuses.append(answer.status_code)
            system_support.RELEASE.set()
            held.join(60)
        finally:
            system_support.RELEASE.set()
            server.stop()
        assert sorted(statuses) == [200, 503, 503, 503]
        project.events.flush()
        report = project.monitoring.system("m", since=since, window=timedelta(hours=1))
        from conveyor.monitoring.system_query import METRICS

        shed_rate = METRICS["shed_rate"](project, "m", since, datetime.now(UTC))
    (row,) = report.windows
    assert row["shed"] == row["errors_5xx"] == statuses.count(503)
    assert row["answered"] == statuses.count(200) and row["requests"] == len(statuses)
    assert shed_rate == pytest.approx(statuses.count(503) / len(statuses))
