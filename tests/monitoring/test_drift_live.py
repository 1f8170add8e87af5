"""Drift on live traffic: real requests through the real server with payload sampling on,
compared with the champion's training data; drift.detected starts the model's retraining.

On SQLite and PostgreSQL (the ``backends`` fixture). The traffic is seeded; the server
keeps every request's inputs (``payload_sample_rate: 1``) so the samples are exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.project import Project, init_project
from conveyor.registry import PythonModel
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until

FEATURES = ["f0", "f1", "f2", "f3"]
WEIGHTS = np.array([1.6, -1.0, 0.5, 0.0])

SPEC = """
serving: {auth: disabled, payload_sample_rate: 1.0, poll_interval_s: 0.2, cache: false}
datasets:
  tx: {}
models:
  fraud:
    train: drift_trainer:fit
    dataset: tx
    features: [f0, f1, f2, f3]
    target: label
    holdout: {by: random, fraction: 0.2}
    retrain:
      on_events: [drift.detected]
  scorer:                  # registered by hand below: a model answering probabilities
    train: drift_trainer:fit
    dataset: scorer_ref
    features: [f0, f1, f2, f3]
    target: label
"""

TRAINER = """
from sklearn.linear_model import LogisticRegression


def fit(X, y, *, seed):
    return LogisticRegression().fit(X, y)
"""


def rows(n: int, seed: int, shift: float = 0.0) -> pa.Table:
    """``n`` rows of four features; ``shift`` moves f0 (the most important) by that many
    standard deviations; the label follows the same logistic model everywhere."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    x[:, 0] += shift
    p = 1.0 / (1.0 + np.exp(-(x @ WEIGHTS)))
    label = (rng.random(n) < p).astype(np.int64)
    return pa.table({**{f: x[:, i] for i, f in enumerate(FEATURES)}, "label": label})


@pytest.fixture
def served(tmp_path: Path, backends: dict[str, str]) -> Iterator[tuple[Project, str]]:
    """A project whose model ``fraud`` was trained on data set ``tx`` (its champion, routed),
    served with every request's inputs sampled into the event log."""
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy
    from conveyor.training.flow import train_candidate

    root = tmp_path / "proj"
    init_project(root, name="drifting")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(SPEC)
    (root / "drift_trainer.py").write_text(TRAINER)
    with Project.open(root, env=backends) as project:
        project.data.ingest("tx", rows(3000, seed=1))
        first = train_candidate(project, "fraud", seed=1)
        project.registry.promote("fraud", first.version, actor="test")
        RouteStore(project.store, project.events, project.registry).set(
            "fraud", RoutePolicy.fixed(1), actor="test"
        )
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            wait_until(
                lambda: httpx.get(f"{server.url}/v2/models/fraud/ready").status_code == 200,
                message="fraud is served",
            )
            yield project, server.url
        finally:
            server.stop()


def send(url: str, table: pa.Table, per_request: int = 50) -> list[tuple[str, list[int]]]:
    """Each request's id and the predicted classes it got back."""
    records = table.select(FEATURES).to_pylist()
    answers = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(records), per_request):
            answer = client.post(
                f"{url}/v1/models/fraud/predict",
                json={"records": records[start : start + per_request]},
            )
            assert answer.status_code == 200, answer.text
            answers.append((answer.headers["x-request-id"], answer.json()["predictions"]))
    return answers


def traffic(
    project: Project, url: str, table: pa.Table, answers: list[tuple[str, list[int]]] | None = None
) -> tuple[datetime, datetime]:
    """Send ``table`` through the server; the time range its prediction events fall in."""
    since = datetime.now(UTC)
    before = project.events.count(kind="prediction")
    got = send(url, table)
    if answers is not None:
        answers += got
    expected = before + -(-table.num_rows // 50)

    def written() -> bool:
        project.events.flush()
        return bool(project.events.count(kind="prediction") >= expected)

    wait_until(written, message="the prediction events are written")
    return since, datetime.now(UTC) + timedelta(milliseconds=1)


def test_live_drift_is_found_against_the_training_data_and_starts_a_retraining(
    served: tuple[Project, str],
) -> None:
    from conveyor.monitoring.compaction import compact
    from conveyor.monitoring.drift_live import drift_metric, live_drift
    from conveyor.pipelines import LocalRunner, Scheduler
    from conveyor.training.continuous import retraining_schedules

    project, url = served
    scheduler = Scheduler(LocalRunner.for_project(project), retraining_schedules(project))
    assert scheduler.tick() == []  # arms the drift.detected trigger

    # Traffic like the training data: no drift, nothing recorded but the check.
    calm_rows = rows(1000, seed=2)
    answers: list[tuple[str, list[int]]] = []
    since, until = traffic(project, url, calm_rows, answers)
    compact(project)  # read from the Parquet copy (and its per-file cache) from now on
    calm = live_drift(project, "fraud", since=since, until=until, actor="test")
    assert calm.version == 1 and calm.reference["kind"] == "training"
    assert calm.reference["dataset"] == "tx" and calm.reference["rows"] == 3000
    assert calm.current["rows"] == 1000 and calm.current["version_rows"] == 1000
    assert not calm.detected, calm.to_dict()["failures"]
    assert calm.drifted == [] and calm.share == 0.0
    assert "f0" in calm.important  # the model's most important feature, from the registry
    assert calm.predictions is not None and list(calm.predictions.columns) == ["prediction"]
    assert calm.cbpe is not None and abs(calm.cbpe.accuracy - 0.73) < 0.06
    assert calm.cbpe_realized is None  # no label yet

    # The labels arrive (feedback by request id and row): the estimate meets the truth.
    from conveyor.monitoring.feedback import record_feedback

    truth = calm_rows.column("label").to_pylist()
    record_feedback(
        project,
        [
            {"request_id": rid, "row": j, "label": truth[50 * i + j]}
            for i, (rid, _) in enumerate(answers)
            for j in range(50)
        ],
    )
    predicted = [p for _, got in answers for p in got]
    realized = float(np.mean(np.asarray(predicted) == np.asarray(truth)))
    labelled = live_drift(project, "fraud", since=since, until=until, record=False)
    assert labelled.cbpe_realized is not None
    assert labelled.cbpe_realized["labelled"] == 1000
    assert labelled.cbpe_realized["accuracy"] == pytest.approx(realized, abs=1e-6)
    error = labelled.cbpe_realized["accuracy_error"]
    assert error == pytest.approx(labelled.cbpe_realized["estimate"]["accuracy"] - realized)
    assert abs(error) < 0.06  # 1,000 labels: the realized accuracy's own sd is 0.014
    assert labelled.metrics()["cbpe.accuracy_error"] == error
    project.events.flush()
    assert project.events.count(kind="drift.detected") == 0
    assert scheduler.tick() == []

    # f0 moves by one standard deviation: the inputs and the predictions drift.
    since, until = traffic(project, url, rows(1000, seed=3, shift=1.0))
    moved = live_drift(project, "fraud", since=since, until=until, actor="test")
    assert moved.detected and moved.alerted and calm.alerted is False
    assert "f0" in moved.drifted and "prediction:prediction" in moved.drifted
    failures = [c.name for c in moved.report.failures]
    assert any("f0" in name for name in failures), failures
    assert "drift.prediction.prediction" in failures
    assert moved.prediction_drift is not None and moved.prediction_drift > 0.1
    project.events.flush()
    [event] = project.events.query(kind="drift.detected", subject="fraud").items
    assert event.payload["report_id"] == moved.report_id
    assert event.payload["reference"] == "dataset:tx@1"
    assert event.subject_version == "1" and event.actor == "test"
    checked = project.events.query(kind="monitoring.drift_checked", subject="fraud").items
    assert [e.payload["verdict"] for e in checked] == [calm.report.verdict, "failed"]
    from conveyor.checks.persist import get_report

    assert get_report(project.store, moved.report_id).verdict == "failed"
    # The alert metrics read the latest check in their range.
    assert drift_metric(project, "drift.share", "fraud", since, until + timedelta(seconds=5)) == (
        pytest.approx(moved.share, abs=1e-6)
    )

    # The model's retraining listens for drift.detected: one run, a new version.
    [run] = scheduler.tick()
    assert run.succeeded, run.error
    assert run.pipeline == "retrain.fraud"
    assert run.params["triggers"][0]["event_ids"] == [event.id]
    assert project.registry.get("fraud", 2).tags["trigger"] == "event:drift.detected"


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)  # both: above
def test_a_pinned_window_is_a_reference_and_the_cli_and_http_answer(
    served: tuple[Project, str], backends: dict[str, str]
) -> None:
    from typer.testing import CliRunner

    from conveyor.cli import app
    from conveyor.monitoring.drift_live import live_drift

    project, url = served
    first = traffic(project, url, rows(600, seed=4))
    second = traffic(project, url, rows(600, seed=5, shift=1.0))
    found = live_drift(
        project, "fraud", since=second[0], until=second[1], reference_window=first, record=False
    )
    assert found.reference["kind"] == "window" and found.reference["rows"] == 600
    assert found.detected and "f0" in found.drifted
    assert found.cbpe is None  # no labels in a window of traffic
    # Above max_rows, a seeded uniform sample: the same rows every time.
    a, b = (
        live_drift(project, "fraud", since=second[0], until=second[1], max_rows=100, record=False)
        for _ in range(2)
    )
    assert a.current["rows"] == 100 and a.current["sampled_rows"] == 600
    assert a.to_dict()["columns"] == b.to_dict()["columns"]
    assert any("100 of 600" in note for note in a.notes)
    project.events.flush()
    assert project.events.count(kind="drift.detected") == 0  # record=False

    # HTTP: computed on the fly, recorded nowhere.
    answer = httpx.get(
        f"{url}/v1/monitor/drift",
        params={"model": "fraud", "since": second[0].isoformat(), "until": second[1].isoformat()},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["detected"] and "f0" in body["drifted"] and body["version"] == 1
    assert body["metrics"]["drift.share"] == pytest.approx(body["share"])
    bad = httpx.get(f"{url}/v1/monitor/drift", params={"model": "nope"}, timeout=30)
    assert bad.status_code == 404 and bad.json()["reason"] == "no_model", bad.text
    missing = httpx.get(f"{url}/v1/monitor/drift", timeout=30)
    assert missing.status_code == 422, missing.text
    asked = {"model": "fraud", "since": second[0].isoformat(), "until": second[1].isoformat()}
    for wrong, field in (
        ({"max_rows": "many"}, "max_rows"),
        ({"reference_since": first[0].isoformat()}, "reference_since"),
        ({"version": "9"}, None),
    ):
        refused = httpx.get(f"{url}/v1/monitor/drift", params={**asked, **wrong}, timeout=30)
        assert refused.status_code == (422 if field else 404), refused.text
        assert field is None or refused.json()["field"] == field
    pinned = httpx.get(
        f"{url}/v1/monitor/drift",
        params={
            **asked,
            "version": "1",
            "reference_since": first[0].isoformat(),
            "reference_until": first[1].isoformat(),
        },
        timeout=60,
    )
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["reference"]["kind"] == "window" and pinned.json()["detected"]

    # CLI: records the check, as the scheduled job does.
    result = CliRunner().invoke(
        app,
        [
            "monitor",
            "drift",
            "fraud",
            "--since",
            second[0].isoformat(),
            "--until",
            second[1].isoformat(),
            "--json",
            "-C",
            str(project.root),
        ],
        env=backends,
    )
    assert result.exit_code == 0, result.output
    assert '"detected": true' in result.output
    project.events.flush()
    assert project.events.count(kind="drift.detected") == 1
    # What a dashboard polls: the latest recorded check, computed by nobody.
    none_yet = httpx.get(
        f"{url}/v1/monitor/drift", params={"model": "scorer", "recorded": "true"}, timeout=30
    )
    assert none_yet.status_code == 404 and none_yet.json()["reason"] == "no_check"
    latest = httpx.get(
        f"{url}/v1/monitor/drift", params={"model": "fraud", "recorded": "true"}, timeout=30
    )
    assert latest.status_code == 200, latest.text
    recorded = latest.json()
    assert recorded["report_id"] == json.loads(result.output)["report_id"]
    assert recorded["verdict"] == "failed" and recorded["report"]["verdict"] == "failed"
    assert recorded["alerted"] is True and "f0" in recorded["drifted"]
    odd = httpx.get(f"{url}/v1/monitor/drift", params={"model": "fraud", "recorded": "yes"})
    assert odd.status_code == 422 and odd.json()["field"] == "recorded"
    text = CliRunner().invoke(
        app,
        ["monitor", "drift", "fraud", "--window", "1h", "--no-record", "-C", str(project.root)],
        env=backends,
    )
    assert text.exit_code == 0, text.output
    assert "fraud@1: drift detected" in text.output and "CBPE estimate" in text.output
    assert "f0" in text.output and "yes" in text.output  # f0 is marked important
    project.events.flush()
    assert project.events.count(kind="drift.detected") == 1  # --no-record


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)  # both: above
def test_bad_input_gets_clear_typed_errors(served: tuple[Project, str]) -> None:
    from conveyor.monitoring.drift_live import live_drift

    project, _ = served
    now = datetime.now(UTC)
    with pytest.raises(NotFoundError) as unknown:
        live_drift(project, "nope", since=now - timedelta(hours=1))
    assert unknown.value.context["reason"] == "no_model"
    with pytest.raises(NotFoundError) as quiet:
        live_drift(project, "fraud", since=now - timedelta(hours=1))  # no traffic yet
    assert quiet.value.context["reason"] == "no_sampled_inputs"
    assert "payload_sample_rate" in quiet.value.message
    with pytest.raises(InvalidInputError):
        live_drift(project, "fraud", since=now, until=now - timedelta(hours=1))
    with pytest.raises(InvalidInputError):
        live_drift(project, "fraud", since=now - timedelta(hours=1), max_rows=0)

    # A version registered without lineage has no training reference.
    from sklearn.linear_model import LogisticRegression

    frame = rows(200, seed=9).to_pandas()
    project.registry.register(
        "bare",
        LogisticRegression().fit(frame[FEATURES], frame["label"]),
        signature_from=frame[FEATURES],
    )
    when = now - timedelta(minutes=5)
    project.events.record(
        "prediction",
        subject="bare",
        subject_version="1",
        payload={
            "version_id": project.registry.get("bare", 1).id,
            "arm": "direct",
            "flag": None,
            "latency_ms": 1.0,
            "cached": False,
            "rows": 1,
            "output": [1],
            "input": [dict.fromkeys(FEATURES, 0.5)],
        },
    )
    project.events.flush()
    with pytest.raises(NotFoundError) as bare:
        live_drift(project, "bare", since=when)
    assert bare.value.context["reason"] == "no_reference"
    assert "reference_window" in bare.value.message


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)
def test_the_scheduled_drift_job_checks_each_model_and_reports_the_ones_it_cannot(
    served: tuple[Project, str],
) -> None:
    from conveyor.monitoring.compaction import compact
    from conveyor.monitoring.drift_jobs import (
        DriftJobSpec,
        drift_pipeline,
        drift_schedules,
        run_drift_checks,
    )
    from conveyor.monitoring.drift_live import drift_metric, live_rows
    from conveyor.pipelines import LocalRunner, Scheduler

    project, url = served
    assert drift_schedules(project) == []  # no monitoring.drift.cron in the spec
    since, _ = traffic(project, url, rows(500, seed=6, shift=1.0))
    compact(project)  # these rows now come from the Parquet copy, the next from the tail
    traffic(project, url, rows(300, seed=7, shift=1.0))
    version = project.registry.get("fraud", 1)
    columns = [(c["name"], c["type"]) for c in version.signature["inputs"]]
    outputs = version.signature["outputs"]
    end = datetime.now(UTC) + timedelta(seconds=1)
    parsed = live_rows(project, "fraud", since=since, until=end, columns=columns, outputs=outputs)
    assert parsed.num_rows == 800 and parsed.column_names[6:] == [*FEATURES, "prediction"]
    uncached = live_rows(
        project, "fraud", since=since, until=end, columns=columns, outputs=outputs, cache=False
    )
    for _ in range(2):  # the first call caches the copy's file, the second reads it
        cached = live_rows(
            project, "fraud", since=since, until=end, columns=columns, outputs=outputs, cache=True
        )
        assert cached.equals(uncached)
    # A cached file that cannot be read is dropped, and the rows parsed again.
    # (one file per hour of the copy: traffic at the turn of an hour is in two)
    broken = sorted((Path(project.artifacts.root) / "cache" / "drift_live").rglob("*.parquet"))[0]
    broken.write_bytes(b"not parquet")
    again = live_rows(
        project, "fraud", since=since, until=end, columns=columns, outputs=outputs, cache=True
    )
    assert again.equals(uncached) and not broken.exists()
    pipeline = drift_pipeline(DriftJobSpec(cron="*/10 * * * *", window="1h"))
    assert pipeline.name == "monitoring.drift"
    runner = LocalRunner.for_project(project, heartbeat_interval=0.2, stale_after=60)
    scheduler = Scheduler(runner, [pipeline])
    at = datetime(2027, 2, 1, 12, 1, tzinfo=UTC)
    assert scheduler.tick(now=at) == []  # first sight: the next slot is 12:10
    (run,) = scheduler.tick(now=at.replace(minute=11))
    assert run.succeeded, run.error
    out = run.outputs["drift"]
    assert out["detected"] == ["fraud"] and out["checked"] == 1  # every sampled model
    fraud = out["models"]["fraud"]
    assert fraud["version"] == 1 and "f0" in fraud["drifted"] and fraud["rows"] == 800
    project.events.flush()
    [event] = project.events.query(kind="drift.detected").items
    assert event.actor == "pipeline:monitoring.drift"
    now = datetime.now(UTC) + timedelta(seconds=1)
    estimate = drift_metric(project, "cbpe.accuracy", "fraud", since, now)
    assert estimate == pytest.approx(fraud["metrics"]["cbpe.accuracy"])
    assert drift_metric(project, "drift.share", "ghost", since, now) is None

    assert fraud["alerted"]
    listed = run_drift_checks(
        project, DriftJobSpec(models=["ghost", "fraud"], window="1h"), actor="test"
    )
    assert listed["models"]["ghost"]["error"]["reason"] == "no_model"
    assert listed["checked"] == 1 and listed["detected"] == ["fraud"]
    # The drift persists: the check fails again, but drift.detected is once per incident
    # (each would start a retraining).
    assert listed["models"]["fraud"]["alerted"] is False
    project.events.flush()
    assert project.events.count(kind="drift.detected") == 1
    with pytest.raises(InvalidInputError):
        drift_metric(project, "drift.nothing", "fraud", since, now)


def test_the_spec_section_is_checked() -> None:
    from pydantic import ValidationError

    from conveyor.monitoring.drift_jobs import DriftJobSpec

    spec = DriftJobSpec.model_validate(
        {"window": "6h", "reference": {"since": "2026-11-01T00:00", "until": "2026-11-08"}}
    )
    assert spec.window_delta == timedelta(hours=6)
    assert not isinstance(spec.reference, str) and spec.reference.since.tzinfo is UTC
    for bad in (
        {"window": "soon"},
        {"reference": "yesterday"},
        {"reference": {"since": "2026-11-08T00:00", "until": "2026-11-01T00:00"}},
        {"max_rows": 0},
        {"drift_share": 0},
        {"schedule": "daily"},
    ):
        with pytest.raises(ValidationError):
            DriftJobSpec.model_validate(bad)


class Mixed(PythonModel):
    """Strings, booleans and numbers in; a mapping out (a label and two probabilities)."""

    def predict(self, frame: Any) -> Any:
        score = 1.0 / (1.0 + np.exp(-(frame["amount"].to_numpy() - 50.0) / 10.0))
        score = np.where(frame["flagged"].to_numpy(), np.minimum(score + 0.2, 1.0), score)
        label = np.where(score >= 0.5, "high", "low")
        return {"label": label, "proba": np.column_stack([1.0 - score, score])}


def mixed_rows(n: int, seed: int, city_shift: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    cities = np.array(["ams", "ber", "cph", "dub"])
    p = [0.1, 0.2, 0.3, 0.4] if city_shift else [0.4, 0.3, 0.2, 0.1]
    return pa.table(
        {
            "amount": rng.normal(50, 15, n),
            "city": cities[rng.choice(4, n, p=p)],
            "flagged": rng.random(n) < 0.1,
        }
    )


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)
def test_strings_booleans_multi_row_requests_and_mapping_outputs(
    served: tuple[Project, str],
) -> None:
    """Prediction events as the server writes them for a model answering a mapping, with
    several rows per request: the rows unnest in step with their outputs."""
    from conveyor.events.schema import Event
    from conveyor.monitoring.drift_live import live_drift

    project, _ = served
    reference = mixed_rows(3000, seed=1)
    version = project.data.ingest("mixed_ref", reference, new=True).version
    model = Mixed()
    registered = project.registry.register(
        "mixed", model, signature_from=reference.to_pandas(), dataset_versions=[version]
    )
    start = datetime.now(UTC) - timedelta(minutes=30)
    live = mixed_rows(900, seed=2, city_shift=True)
    events = []
    for i in range(0, live.num_rows, 3):  # three rows per request
        chunk = live.slice(i, 3)
        answer = model.predict(chunk.to_pandas())
        events.append(
            Event(
                "prediction",
                subject="mixed",
                subject_version="1",
                request_id=f"mixed-{i}",
                time=start + timedelta(seconds=i),
                payload={
                    "version_id": registered.id,
                    "arm": "direct",
                    "flag": None,
                    "latency_ms": 1.0,
                    "cached": False,
                    "rows": 3,
                    "output": {k: np.asarray(v).tolist() for k, v in answer.items()},
                    "input": chunk.to_pylist(),
                },
            )
        )
    project.events.append_many(events)
    project.events.flush()
    found = live_drift(project, "mixed", since=start, record=False)
    assert found.current["rows"] == 900 and found.reference["rows"] == 3000
    assert found.drifted == ["city"], found.to_dict()["columns"]
    assert found.inputs["city"].test == "chisquare" and found.inputs["flagged"].test == "z"
    assert found.predictions is not None
    assert sorted(found.predictions.columns) == ["label", "proba_0", "proba_1"]
    assert not any(c.startswith("prediction:") for c in found.drifted)  # amount did not move
    # Not in the spec's models: no target column, so no labelled reference for CBPE.
    assert found.cbpe is None and any("no labelled reference" in n for n in found.notes)


class Probabilities(PythonModel):
    """A classifier that answers class probabilities and has no predict_proba (as an ONNX
    or PyTorch export would)."""

    def __init__(self, fitted: Any) -> None:
        self.fitted = fitted

    def predict(self, frame: Any) -> Any:
        return self.fitted.predict_proba(frame[FEATURES])


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)
def test_cbpe_from_the_probabilities_a_model_answers(served: tuple[Project, str]) -> None:
    from sklearn.linear_model import LogisticRegression

    from conveyor.events.schema import Event
    from conveyor.monitoring.drift_live import live_drift

    project, _ = served
    reference = rows(4000, seed=11)
    version = project.data.ingest("scorer_ref", reference, new=True).version
    frame = reference.to_pandas()
    model = Probabilities(LogisticRegression().fit(frame[FEATURES], frame["label"]))
    registered = project.registry.register(
        "scorer", model, signature_from=frame[FEATURES], dataset_versions=[version]
    )
    live = rows(3000, seed=12, shift=0.7)
    probabilities = model.predict(live.to_pandas())
    start = datetime.now(UTC) - timedelta(minutes=30)
    project.events.append_many(
        [
            Event(
                "prediction",
                subject="scorer",
                subject_version="1",
                request_id=f"scorer-{i}",
                time=start + timedelta(milliseconds=100 * i),
                payload={
                    "version_id": registered.id,
                    "arm": "direct",
                    "flag": None,
                    "latency_ms": 1.0,
                    "cached": False,
                    "rows": 1,
                    "output": [probabilities[i].tolist()],
                    "input": [row],
                },
            )
            for i, row in enumerate(live.select(FEATURES).to_pylist())
        ]
    )
    project.events.flush()
    found = live_drift(project, "scorer", since=start, record=False)
    assert found.predictions is not None
    assert sorted(found.predictions.columns) == ["prediction_0", "prediction_1"]
    assert found.cbpe is not None, found.notes
    truth = live.column("label").to_numpy()
    realized = float(np.mean((probabilities[:, 1] >= 0.5) == truth))
    # 3,000 rows: the realized accuracy's own standard deviation is about 0.008.
    assert abs(found.cbpe.accuracy - realized) < 0.04, (found.cbpe.accuracy, realized)


def test_the_reference_window_option_is_parsed_or_refused_with_its_field() -> None:
    import conveyor.cli  # noqa: F401  (a capability's CLI module loads after the CLI, as for all)
    from conveyor.monitoring.drift_cli import reference_window

    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    assert reference_window("14d/7d", now) == (now - timedelta(days=14), now - timedelta(days=7))
    assert reference_window("2026-11-01T00:00/2026-11-08T00:00", now) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 8, tzinfo=UTC),
    )
    for bad in ("7d", "/7d", "7d/", "a/b/c", "soon/later"):
        with pytest.raises(InvalidInputError) as info:
            reference_window(bad, now)
        assert info.value.context["field"] == "reference_window", bad
