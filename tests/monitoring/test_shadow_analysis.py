"""Shadow analysis: agreement, differences, latency, errors and the largest disagreements
with their inputs, from prediction.shadow events (the columnar copy and the log's tail)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from conveyor.errors import InvalidInputError
from conveyor.events.schema import Event
from conveyor.monitoring.shadow_analysis import compare_rows, shadow_analysis
from conveyor.project import Project, init_project

START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def test_rows_compare_by_task() -> None:
    assert compare_rows("fraud", "fraud")[:2] == ("classification", True)
    task, agree, diff, apart = compare_rows(1, 0)
    assert (task, agree, diff, apart) == ("classification", False, None, 1.0)
    task, agree, diff, apart = compare_rows(10.0, 12.5)
    assert (task, agree, diff, apart) == ("regression", False, 2.5, 2.5)
    assert compare_rows(453452.36, 453452.36 * (1 + 1e-7))[1]  # within the serving tolerance
    # Probabilities: compared by arg-max; a flip ranks above any shift of probabilities.
    task, agree, _, apart = compare_rows([0.2, 0.8], [0.3, 0.7])
    assert task == "classification" and agree and apart == pytest.approx(0.1)
    task, agree, _, apart = compare_rows([0.4, 0.6], [0.6, 0.4])
    assert not agree and apart == pytest.approx(1.2)
    assert not compare_rows(1.0, "a")[1]
    assert compare_rows(float("inf"), float("inf"))[1]
    assert compare_rows(float("nan"), float("nan"))[1]
    assert compare_rows(1.0, float("nan"))[3] == float("inf")  # ranks first
    assert compare_rows(3.0, 3)[1]  # a number is a number, whatever its JSON type


def _events(n: int, seed: int) -> list[Event]:
    """A regression model: shadow @2 adds noise and fails one copy in 50; @3 is exact."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        at = START + timedelta(seconds=i)
        x = float(rng.normal(0, 1))
        y = 3.0 * x
        noise = float(rng.normal(0.5, 0.1))
        request = f"req-{i}"
        events.append(
            Event(
                "prediction",
                subject="house",
                subject_version="1",
                request_id=request,
                time=at,
                payload={
                    "version_id": "v1",
                    "arm": "direct",
                    "flag": None,
                    "latency_ms": 2.0 + (i % 10),
                    "cached": False,
                    "rows": 1,
                    "output": [y],
                    "input": [{"x": x}],  # sampled: every request here
                },
            )
        )
        for version, output, status in (
            ("2", None if i % 50 == 7 else [y + noise], "error" if i % 50 == 7 else "ok"),
            ("3", [y], "ok"),
        ):
            events.append(
                Event(
                    "prediction.shadow",
                    subject="house",
                    subject_version=version,
                    request_id=request,
                    time=at + timedelta(milliseconds=5),
                    payload={
                        "primary_version": 1,
                        "primary_output": [y],
                        "output": output,
                        "agree": version == "3",
                        "compared": 1,
                        "differing": 0 if version == "3" else 1,
                        "max_abs_diff": None,
                        "mean_abs_diff": None,
                        "status": status,
                        "error": "RuntimeError: boom" if status == "error" else None,
                        "latency_ms": (4.0 if version == "2" else 1.0) * (2.0 + (i % 10)),
                    },
                )
            )
    return events


def test_the_analysis_of_logged_shadow_traffic(project: Project) -> None:
    """On SQLite and PostgreSQL (the monitoring tests' ``project``)."""
    from conveyor.monitoring.compaction import compact

    events = _events(400, seed=1)
    project.events.append_many(events[:600])
    project.events.flush()
    compact(project)  # the first part from Parquet, the rest from the log's tail
    project.events.append_many(events[600:])
    project.events.flush()
    window = {"since": START, "until": START + timedelta(hours=1)}
    analysis = shadow_analysis(project, "house", **window, top=5)
    assert analysis.read["files"] and analysis.read["tail_events"]
    noisy, exact = analysis.version(2), analysis.version(3)
    assert exact.copies == 400 and exact.agreement_rate == 1.0 and exact.errors == 0
    assert exact.differences is not None and exact.differences["mean_abs"] == 0
    assert noisy.copies == 400 and noisy.errors == 8 and noisy.error_rate == 8 / 400
    assert noisy.error_messages == {"RuntimeError: boom": 8}
    assert noisy.task == "regression" and noisy.agreement_rate == 0.0
    d = noisy.differences
    assert d is not None and d["count"] == 392
    assert d["mean"] == pytest.approx(0.5, abs=0.02)
    assert d["quantiles"]["p5"] < d["quantiles"]["p50"] < d["quantiles"]["p95"]
    assert sum(d["histogram"]["counts"]) == 392 and len(d["histogram"]["edges"]) == 11
    # Latency of the same requests: @2 is 4x slower than the primary, @3 as fast.
    assert noisy.latency["p95_ratio"] == pytest.approx(4.0)
    assert exact.latency["p95_ratio"] == pytest.approx(1.0)
    assert noisy.latency["primary"]["count"] == 400
    # The largest disagreements, largest first, each with the sampled input.
    top = noisy.disagreements
    assert len(top) == 5
    differences = [item["difference"] for item in top]
    assert differences == sorted(differences, reverse=True)
    assert differences[0] == pytest.approx(d["max"])
    for item in top:
        assert item["input_from"] == "prediction" and set(item["input"]) == {"x"}
        assert item["shadow"] - item["primary"] == pytest.approx(item["difference"])
        assert item["primary"] == pytest.approx(3.0 * item["input"]["x"])
    report = {c.name: c for c in analysis.report}
    assert analysis.report.kind == "shadow" and analysis.report.verdict == "failed"
    assert report["shadow@3.agreement"].passed and report["shadow@3.latency_p95"].passed
    assert not report["shadow@2.agreement"].passed
    assert not report["shadow@2.errors"].passed and not report["shadow@2.latency_p95"].passed
    # One version only; lenient thresholds pass it.
    only = shadow_analysis(project, "house", 3, **window)
    assert [v.version for v in only.versions] == ["3"] and only.report.passed
    loose = shadow_analysis(
        project,
        "house",
        2,
        **window,
        min_agreement=0,
        max_error_rate=0.05,
        max_latency_ratio=5,
    )
    assert loose.report.verdict == "passed"


def test_no_shadow_traffic_is_a_warning_and_bad_input_is_refused(project: Project) -> None:
    analysis = shadow_analysis(project, "house", since=START, until=START + timedelta(hours=1))
    assert analysis.versions == []
    assert analysis.report.verdict == "passed with warnings"
    assert analysis.report.warnings[0].name == "shadow.traffic"
    with pytest.raises(InvalidInputError):
        shadow_analysis(project, "house", "two")
    with pytest.raises(InvalidInputError):
        shadow_analysis(project, "house", min_agreement=2)
    with pytest.raises(InvalidInputError):
        shadow_analysis(project, "house", since=START, until=START - timedelta(hours=1))


def test_shadow_analysis_of_real_traffic_through_the_server(tmp_path: Path) -> None:
    """A route with two shadows (a label-flipping classifier and an exact copy), requests
    through the real server, the analysis over HTTP and from the CLI."""
    from sklearn.linear_model import LogisticRegression
    from typer.testing import CliRunner

    from conveyor.cli import app
    from conveyor.serving.app import create_app
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy
    from conveyor.serving.server import ThreadedServer
    from conveyor.testing.wait import wait_until

    init_project(tmp_path, name="shadow")
    with (tmp_path / "conveyor.yaml").open("a") as spec:
        spec.write("serving: {auth: disabled}\n")
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"a": rng.normal(0, 1, 300), "b": rng.normal(0, 1, 300)})
    y = (X["a"] + X["b"] > 0).astype(int)
    with Project.open(tmp_path, env={}) as project:
        registry = project.registry
        registry.register("clf", LogisticRegression().fit(X, y), signature_from=X)  # @1
        registry.register("clf", LogisticRegression().fit(X, 1 - y), signature_from=X)  # @2
        registry.register("clf", LogisticRegression().fit(X, y), signature_from=X)  # @3
        RouteStore(project.store, project.events, registry).set(
            "clf", RoutePolicy.fixed(1, shadow=[2, 3])
        )
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            url = f"{server.url}/v1/models/clf/predict"
            wait_until(
                lambda: (
                    httpx.post(url, json={"records": [{"a": 1.0, "b": 1.0}]}).status_code == 200
                ),
                message="clf@1 answers",
                timeout=30,
            )
            with httpx.Client(timeout=30) as client:
                for i in range(20):
                    rows = X.iloc[i * 2 : i * 2 + 2].to_dict(orient="records")
                    assert client.post(url, json={"records": rows}).status_code == 200
            wait_until(
                lambda: project.events.count(kind="prediction.shadow") >= 42,
                message="every shadow copy recorded",
                timeout=30,
            )
            answer = httpx.get(
                f"{server.url}/v1/monitor/shadow/clf", params={"window": "1h", "top": "3"}
            )
            bad = httpx.get(f"{server.url}/v1/monitor/shadow/clf", params={"version": "x"})
        finally:
            server.stop()
        assert answer.status_code == 200, answer.text
        body = answer.json()
        by_version = {v["version"]: v for v in body["versions"]}
        flipped, same = by_version["2"], by_version["3"]
        assert same["agreement_rate"] == 1.0 and same["task"] == "classification"
        assert flipped["agreement_rate"] < 0.2 and flipped["copies"] == 21
        assert flipped["latency"]["primary"]["count"] == 21
        assert flipped["latency"]["shadow"]["p95_ms"] > 0
        assert len(flipped["disagreements"]) == 3
        for item in flipped["disagreements"]:
            # The inputs came with the shadow event (requests were not sampled).
            assert item["input_from"] == "prediction.shadow"
            assert set(item["input"]) == {"a", "b"} and item["primary"] != item["shadow"]
        assert body["report"]["verdict"] == "failed"
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"
        result = CliRunner().invoke(
            app,
            [
                *("monitor", "shadow", "clf", "--version", "3", "--json", "-C", str(tmp_path)),
                *("--max-latency-ratio", "1000"),  # no timing assertion
            ],
        )
        assert result.exit_code == 0, result.output
        assert orjson.loads(result.output)["versions"][0]["agreement_rate"] == 1.0
        failing = CliRunner().invoke(app, ["monitor", "shadow", "clf", "-C", str(tmp_path)])
        assert failing.exit_code == 3 and "shadow@2.agreement" in failing.output


def test_equal_differences_make_one_histogram_bin() -> None:
    """A shadow that adds a constant: differences all but equal (numpy refuses 10 bins)."""
    from conveyor.monitoring.shadow_analysis import _analyse

    rows = []
    for i in range(50):
        y = i / 7
        payload = {"primary_version": 1, "primary_output": [y], "output": [y + 0.5]}
        rows.append(("2", f"r{i}", i, "ok", 2.0, orjson.dumps(payload).decode(), 1.0))
    v = _analyse("2", rows, 3, orjson.loads)
    d = v.differences
    assert d is not None and d["mean"] == pytest.approx(0.5)
    assert sum(d["histogram"]["counts"]) == 50
    assert len(v.disagreements) == 3 and v.latency["p95_ratio"] == pytest.approx(2.0)
