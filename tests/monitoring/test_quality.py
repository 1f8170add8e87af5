"""Quality and concept drift from feedback, on prediction events written to the log: the
entity-key join, late predictions re-joining quarantined feedback, the bulk loader's
rejected rows, regression, multiclass and ranking tasks, and the concept-drift judgment
(a label flip on 10% of a segment is detected within the configured window)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from quality_support import calibrated_stream, prediction

from conveyor.checks.metrics import metric
from conveyor.errors import InvalidInputError
from conveyor.monitoring.feedback import feedback_for, load_feedback, record_feedback
from conveyor.monitoring.quality import (
    concept_drift,
    quality_metric,
    quality_report,
    quarantined,
    record_concept_drift,
)
from conveyor.project import Project, init_project

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
WHOLE = timedelta(days=365 * 30)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "proj"
    init_project(root, name="graded")
    (root / "conveyor.yaml").write_text(
        (root / "conveyor.yaml").read_text()
        + "monitoring:\n  quality:\n    horizon: 1d\n    concept_drift: {window: 1h}\n"
        + "    models:\n      ranker: {task: ranking, metrics: [ndcg@3, map]}\n"
        + "      mail: {classes: [ham, spam], threshold: 0.7}\n"
    )
    with Project.open(root, env={}) as opened:
        yield opened


def _write(project: Project, events: list) -> None:  # type: ignore[type-arg]
    project.events.append_many(events)
    project.events.flush()


def test_entity_key_feedback_joins_the_latest_prediction_before_the_outcome(
    project: Project,
) -> None:
    def key(customer: int) -> list[dict[str, int]]:
        return [{"customer_id": customer, "x": 1}]

    _write(
        project,
        [
            prediction("k1", T0, [0.9], inputs=key(7)),
            prediction("k2", T0 + timedelta(minutes=10), [0.2], inputs=key(7)),
            prediction("k3", T0 + timedelta(hours=2), [0.6], inputs=key(7)),
            prediction("k4", T0 + timedelta(minutes=20), [0.7], inputs=key(8)),
            prediction("k5", T0 + timedelta(minutes=5), [0.1], model="other", inputs=key(7)),
        ],
    )
    at = T0 + timedelta(minutes=30)
    early, late = (T0 - timedelta(minutes=1)).isoformat(), (T0 + timedelta(days=2)).isoformat()
    done = record_feedback(
        project,
        [
            {"model": "fraud", "keys": {"customer_id": 7}, "time": at.isoformat(), "label": 1},
            {"model": "fraud", "key.customer_id": 8, "time": at.isoformat(), "label": 0},
            # before any prediction for the key, and past the horizon (1d) after the last
            {"model": "fraud", "keys": {"customer_id": 7}, "time": early, "label": 0},
            {"model": "fraud", "keys": {"customer_id": 7}, "time": late, "label": 0},
        ],
    )
    assert done.by_key == 4 and done.accepted == 4
    found = quality_report(
        project, "fraud", since=T0 - timedelta(hours=1), until=T0 + timedelta(hours=3), window=WHOLE
    )
    (window,) = found.windows
    assert window["labelled"] == 2 and window["predictions"] == 4
    # k2 (0.2, label 1) and k4 (0.7, label 0): both wrong at 0.5.
    assert window["accuracy"] == 0.0
    listed = quarantined(project, since=T0 - timedelta(days=1))
    assert listed["reasons"] == {"no_prediction_for_key": 2}


def test_late_predictions_rejoin_quarantined_feedback_and_the_last_label_counts(
    project: Project,
) -> None:
    since = datetime.now(UTC) - timedelta(hours=1)
    record_feedback(
        project, [{"request_id": "late", "label": 1}, {"request_id": "late", "label": 0}]
    )
    record_feedback(project, [{"request_id": "gone", "row": 3, "label": 1, "model": "fraud"}])
    listed = quarantined(project, since=since)
    assert listed["quarantined"] == 3 and listed["reasons"] == {"unknown_request_id": 3}
    # The predictions reach the log later (a batch scorer's events, a replayed spill).
    now = datetime.now(UTC)
    _write(project, [prediction("late", now, [0.3]), prediction("gone", now, [0.4], model="x")])
    listed = quarantined(project, since=since)
    assert listed["reasons"] == {"row_out_of_range": 1}
    window = quality_report(project, "fraud", since=since, window=WHOLE).windows[0]
    assert window["labelled"] == 1 and window["overwritten"] == 1 and window["accuracy"] == 1.0
    assert [f["label"] for f in feedback_for(project, "late")] == [1, 0]


def test_the_bulk_loader_keeps_rejected_rows_with_their_reasons(
    project: Project, tmp_path: Path
) -> None:
    import pandas as pd

    csv = tmp_path / "labels.csv"
    csv.write_text(
        "request_id,row,label,value,time,key.customer_id,model\n"
        "r1,0,1,,,,\n"
        "r2,0,,12.5,2026-12-01T10:00:00Z,,\n"
        "r3,0,,,,,\n"  # neither label nor value
        ",0,1,,2026-12-01T10:00:00,42,churn\n"  # by key
        "r4,0,1,,yesterday,,\n"
        "r5,-1,1,,,,\n"
    )
    done = load_feedback(project, csv)
    assert (done.accepted, done.by_key, done.rejected) == (3, 1, 3)
    assert done.reasons == {"no_label_or_value": 1, "bad_time": 1, "bad_row": 1}
    project.events.flush()
    (rejected,) = project.events.query(kind="feedback.rejected").items
    assert rejected.payload["rows"] == 3 and rejected.payload["source"] == "labels.csv"
    assert [r["row"] for r in rejected.payload["records"]] == [2, 4, 5]
    assert rejected.payload["records"][1]["record"]["time"] == "yesterday"

    lines = tmp_path / "labels.jsonl"
    lines.write_text(
        '{"request_id": "a", "label": "cat"}\nnot json\n{"request_id": "b", "labl": 1}\n'
    )
    done = load_feedback(project, lines)
    assert (done.accepted, done.rejected) == (1, 2)
    assert done.reasons == {"not_json": 1, "unknown_field": 1}
    frame = pd.DataFrame({"request_id": ["c", "d"], "label": [np.int64(1), np.int64(0)]})
    assert load_feedback(project, frame).accepted == 2
    frame.to_parquet(tmp_path / "labels.parquet")
    assert load_feedback(project, tmp_path / "labels.parquet").accepted == 2
    with pytest.raises(InvalidInputError, match="no feedback file"):
        load_feedback(project, tmp_path / "missing.csv")
    with pytest.raises(InvalidInputError, match=r"records\[0\]") as caught:
        record_feedback(project, [{"label": 1}])
    assert caught.value.context["reason"] == "no_prediction_named"


def test_regression_multiclass_and_ranking_quality_are_the_gates_metrics(
    project: Project,
) -> None:
    rng = np.random.default_rng(5)
    since = T0 - timedelta(minutes=1)
    events, feedback = [], []
    truth: dict[str, list] = {"reg": [], "cls": [], "rank": []}  # type: ignore[type-arg]
    for i in range(60):
        when = T0 + timedelta(seconds=i)
        y = float(rng.normal(10, 2))
        p = y + float(rng.normal(0, 1))
        events.append(prediction(f"g{i}", when, [p], model="prices"))
        feedback.append({"request_id": f"g{i}", "label": y})
        truth["reg"].append((y, p))
        proba = rng.dirichlet([1, 1, 1])
        label = int(rng.integers(0, 3))
        events.append(prediction(f"c{i}", when, [proba.tolist()], model="species"))
        feedback.append({"request_id": f"c{i}", "label": label})
        truth["cls"].append((label, proba))
    for q in range(12):  # queries of 4 to 6 items, relevance for some items only
        items = int(rng.integers(4, 7))
        scores = rng.random(items).round(6)
        events.append(
            prediction(f"q{q}", T0 + timedelta(seconds=q), scores.tolist(), model="ranker")
        )
        relevance = np.zeros(items)
        for item in rng.choice(items, size=2, replace=False):
            relevance[item] = float(rng.integers(1, 4))
            feedback.append({"request_id": f"q{q}", "row": int(item), "label": relevance[item]})
        truth["rank"].append((relevance, scores))
    _write(project, events)
    record_feedback(project, feedback)

    prices = quality_report(project, "prices", since=since, window=WHOLE)
    assert prices.task == "regression" and prices.metrics == ["mae", "rmse", "r2", "mape"]
    ys, ps = (np.array(v) for v in zip(*truth["reg"], strict=True))
    for name in prices.metrics:
        assert prices.windows[0][name] == pytest.approx(metric(name)(ys, ps), rel=1e-9)

    species = quality_report(project, "species", since=since, window=WHOLE)
    assert species.task == "multiclass"
    labels = np.array([t[0] for t in truth["cls"]])
    proba = np.array([t[1] for t in truth["cls"]])
    for name in species.metrics:
        m = metric(name)
        want = (
            m(labels, proba, classes=[0, 1, 2])
            if m.needs == "score"
            else m(labels, proba.argmax(1))
        )
        assert species.windows[0][name] == pytest.approx(want, rel=1e-9), name

    ranker = quality_report(project, "ranker", since=since, window=WHOLE)
    width = max(len(r) for r, _ in truth["rank"])
    rel = np.full((12, width), np.nan)
    sc = np.full((12, width), np.nan)
    for i, (r, s) in enumerate(truth["rank"]):
        rel[i, : len(r)], sc[i, : len(s)] = r, s
    assert ranker.metrics == ["ndcg@3", "map"]
    for name in ranker.metrics:
        assert ranker.windows[0][name] == pytest.approx(metric(name)(rel, sc), rel=1e-9)
    # The alerts' metric function: the same over the range.
    value = quality_metric("rmse")(project, "prices", since, datetime.now(UTC))
    assert value == pytest.approx(metric("rmse")(ys, ps), rel=1e-9)
    assert quality_metric("rmse")(project, "nothing", since, datetime.now(UTC)) is None


@pytest.mark.parametrize("seed", range(3))
def test_a_label_flip_on_a_tenth_of_a_segment_is_concept_drift(project: Project, seed: int) -> None:
    """Two steady hours, then one in which 10% of the labels of half the traffic are
    flipped. Judged with the hour before as reference, the second hour is not drift (the
    same distribution) and the third is."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    first, first_labels = calibrated_stream(3000, start, seed=seed)
    steady, steady_labels = calibrated_stream(3000, start + timedelta(hours=1), seed=100 + seed)
    flipped, flipped_labels = calibrated_stream(
        3000, start + timedelta(hours=2), seed=200 + seed, flip=0.1
    )
    _write(project, first + steady + flipped)
    record_feedback(project, first_labels + steady_labels + flipped_labels)

    def judge(hours: int) -> Any:
        at = start + timedelta(hours=hours)
        return concept_drift(project, "fraud", at=at, metric="accuracy", reference="window")

    calm = judge(2)
    assert calm.status == "ok" and calm.labelled == 3000, calm.detail
    judged = judge(3)
    assert judged.detected, judged.detail
    assert judged.labelled == 3000 and judged.low is not None and judged.low > 0
    assert judged.to_check().passed is False
    # Recorded, it is a report and drift.detected, which retraining triggers listen for.
    report_id = record_concept_drift(project, judged, actor="test")
    (detected,) = project.events.query(kind="drift.detected").items
    assert detected.payload["report_id"] == report_id and detected.subject == "fraud"
    assert detected.payload["drifted"] == ["concept_drift.accuracy"]
    assert judge(1).status == "insufficient"  # nothing labelled before the first hour


def test_concept_drift_against_the_registry_and_bad_arguments(project: Project) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    events, labels = calibrated_stream(2000, start, seed=9)
    _write(project, events)
    record_feedback(project, labels)
    realized = quality_report(project, "fraud", since=start, window=WHOLE).windows[0]["accuracy"]
    # The registry holds no version 1 of fraud: the window before is the reference, and
    # it holds nothing.
    judged = concept_drift(project, "fraud", at=start + timedelta(hours=1), metric="accuracy")
    assert judged.status == "insufficient" and "no reference" in judged.detail
    assert judged.current == pytest.approx(realized, rel=1e-9)
    with pytest.raises(InvalidInputError, match="reference"):
        concept_drift(project, "fraud", reference="yesterday")
    with pytest.raises(InvalidInputError, match="unknown metric"):
        quality_report(project, "fraud", since=start, metrics=["aucc"])
    with pytest.raises(InvalidInputError, match="does not apply to binary"):
        quality_report(project, "fraud", since=start, metrics=["rmse"])
    with pytest.raises(InvalidInputError, match="until"):
        quality_report(project, "fraud", since=start, until=start)


def test_the_cli_reports_quality_with_concept_drift_and_the_quarantine(project: Project) -> None:
    import json

    from typer.testing import CliRunner

    from conveyor.cli import app

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=90)
    events, labels = calibrated_stream(400, start, seed=3)
    _write(project, events)
    record_feedback(project, [*labels, {"request_id": "stranger", "label": 1}])

    def run(*args: str) -> Any:
        return CliRunner().invoke(app, [*args, "-C", str(project.root)], env={})

    done = run(
        "monitor", "quality", "fraud", "--since", "2h", "--window", "1h", "--drift", "--json"
    )
    assert done.exit_code == 0, done.output
    body = json.loads(done.output)
    direct = quality_report(
        project, "fraud", since=start - timedelta(minutes=30), window=timedelta(hours=1)
    )
    assert [w["accuracy"] for w in body["windows"]] == pytest.approx(
        [w["accuracy"] for w in direct.windows]
    )
    assert sum(w["labelled"] for w in body["windows"]) == 400
    # The quality SLO's metric, which the gates hold versions to.
    slo = project.spec.slos.quality
    assert slo is not None and body["concept_drift"]["metric"] == slo.metric
    quarantine = run("feedback", "quarantine", "--since", "1h", "--json")
    assert json.loads(quarantine.output)["reasons"] == {"unknown_request_id": 1}
    table = run("monitor", "quality", "fraud", "--since", "2h")
    assert table.exit_code == 0 and "roc_auc" in table.output, table.output
    shown = run("feedback", "show", labels[0]["request_id"], "--json")
    assert json.loads(shown.output)["feedback"][0]["label"] == labels[0]["label"]
    assert "[counts]" in run("feedback", "show", labels[0]["request_id"]).output
    recorded = run("monitor", "quality", "fraud", "--since", "2h", "--record", "--json")
    assert recorded.exit_code == 0, recorded.output
    report_id = json.loads(recorded.output)["concept_drift"]["report_id"]
    from conveyor.checks.persist import get_report

    saved = get_report(project.store, report_id)
    assert saved.kind == "concept_drift" and saved.checks[0].name.startswith("concept_drift.")
    labels_file = project.root / "late.jsonl"
    labels_file.write_text('{"request_id": "x", "label": 1}\n{"request_id": "y"}\n')
    loaded = run("feedback", "load", str(labels_file))
    assert loaded.exit_code == 1, loaded.output  # a rejected row fails the command
    assert "loaded 1 feedback records" in loaded.output and "1 no_label_or_value" in loaded.output
    bad = run("monitor", "quality", "fraud", "--metric", "aucc")

    assert bad.exit_code != 0 and "unknown metric 'aucc'" in bad.output


def test_named_outputs_string_classes_and_labels_outside_them(project: Project) -> None:
    """A model answering {"label": [...], "proba": [...]}: its probabilities are scored, the
    classes named in the spec; a label that is none of them is left out, and said so."""
    rng = np.random.default_rng(8)
    classes = np.array(["ham", "spam"])
    events, feedback, truth = [], [], []
    for i in range(80):
        p = float(rng.random())
        label = str(classes[int(rng.random() < p)])
        output = {"label": [str(classes[int(p >= 0.5)])], "proba": [[1 - p, p]]}
        events.append(prediction(f"m{i}", T0 + timedelta(seconds=i), output, model="mail"))
        feedback.append({"request_id": f"m{i}", "label": label})
        truth.append((label, p))
    events.append(prediction("m-odd", T0, {"label": ["ham"], "proba": [[0.9, 0.1]]}, model="mail"))
    feedback.append({"request_id": "m-odd", "label": "eggs"})
    _write(project, events)
    record_feedback(project, feedback)
    report = quality_report(project, "mail", since=T0 - timedelta(minutes=1), window=WHOLE)
    (window,) = report.windows
    assert report.task == "binary" and window["labelled"] == 81
    assert "1 labels are none of the classes" in report.notes[0]
    y = np.array([t[0] for t in truth])
    s = np.array([t[1] for t in truth])
    assert window["roc_auc"] == pytest.approx(metric("roc_auc")(y, s, classes=classes), rel=1e-9)
    predicted = np.where(s >= 0.7, "spam", "ham")  # the spec's threshold
    assert window["f1"] == pytest.approx(metric("f1")(y, predicted, classes=classes), rel=1e-9)


def test_a_task_is_inferred_from_labels_and_outputs_never_guessing_a_positive_class(
    project: Project,
) -> None:
    since = T0 - timedelta(minutes=1)
    words = ["cat", "dog"]
    events: list[Any] = []
    feedback: list[dict[str, Any]] = []
    for i in range(20):
        events.append(prediction(f"w{i}", T0, [words[i % 2]], model="pets"))
        feedback.append({"request_id": f"w{i}", "label": words[(i // 3) % 2]})
        events.append(prediction(f"n{i}", T0, [i % 3], model="digits"))
        feedback.append({"request_id": f"n{i}", "label": (i // 2) % 3})
    _write(project, events)
    record_feedback(project, feedback)
    pets = quality_report(project, "pets", since=since, window=WHOLE)
    # Two string labels and no classes in the spec: macro averages, not a guessed positive.
    assert pets.task == "multiclass" and "roc_auc" not in pets.metrics
    y = np.array([words[(i // 3) % 2] for i in range(20)])
    p = np.array([words[i % 2] for i in range(20)])
    assert pets.windows[0]["f1"] == pytest.approx(metric("f1")(y, p, task="multiclass"))
    digits = quality_report(project, "digits", since=since, window=WHOLE)
    assert digits.task == "multiclass"  # whole numbers are class ids, not values


def test_a_bad_quality_section_is_an_error_naming_the_field(tmp_path: Path) -> None:
    from conveyor.errors import ConfigError

    root = tmp_path / "bad"
    init_project(root, name="bad")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write("monitoring:\n  quality:\n    horizon: soon\n    models:\n")
        spec.write("      fraud: {metrics: [aucc], task: clustering}\n")
    with pytest.raises(ConfigError) as caught:
        Project.open(root, env={}).close()
    message = str(caught.value)
    assert "monitoring.quality.horizon" in message and "'soon'" in message
    assert "monitoring.quality.models.fraud.metrics: unknown metric 'aucc'" in message
    assert "monitoring.quality.models.fraud.task" in message


def test_the_scheduler_judges_and_records_concept_drift(tmp_path: Path) -> None:
    """``monitoring.quality.concept_drift.cron``: the pipeline judges each model and records
    the judgment; the flipped hour is drift.detected."""
    from conveyor.monitoring.quality_jobs import concept_drift_schedules, judge_models
    from conveyor.pipelines.runner import LocalRunner

    root = tmp_path / "proj"
    init_project(root, name="scheduled")
    with Project.open(root, env={}) as project:
        assert concept_drift_schedules(project) == []
    env = {
        "CONVEYOR_MONITORING__QUALITY__CONCEPT_DRIFT__CRON": "0 * * * *",
        "CONVEYOR_MONITORING__QUALITY__CONCEPT_DRIFT__WINDOW": "1h",
        "CONVEYOR_MONITORING__QUALITY__CONCEPT_DRIFT__METRIC": "accuracy",
        "CONVEYOR_MONITORING__QUALITY__CONCEPT_DRIFT__REFERENCE": "window",
    }
    with Project.open(root, env=env) as project:
        now = datetime.now(UTC).replace(microsecond=0)
        steady, steady_labels = calibrated_stream(3000, now - timedelta(hours=2), seed=0)
        flipped, flipped_labels = calibrated_stream(
            3000, now - timedelta(hours=1), seed=200, flip=0.1
        )
        _write(project, steady + flipped)
        record_feedback(project, steady_labels + flipped_labels)
        (pipeline,) = concept_drift_schedules(project)
        assert pipeline.name == "monitoring.concept_drift" and pipeline.schedule == "0 * * * *"
        runner = LocalRunner.for_project(project, heartbeat_interval=0.2, stale_after=60)
        run = runner.run(pipeline)
        assert run.succeeded, run.error
        judged = run.outputs["concept_drift"]
        assert judged["detected"] == ["fraud"], judged
        project.events.flush()
        (detected,) = project.events.query(kind="drift.detected").items
        assert detected.actor == "pipeline:monitoring.concept_drift"
        assert detected.payload["report_id"] == judged["models"]["fraud"]["report_id"]
        # No reference for the first hour: listed, not recorded.
        early = judge_models(project, at=now - timedelta(hours=1))
        assert early["models"]["fraud"]["status"] == "insufficient"
        assert "report_id" not in early["models"]["fraud"]
