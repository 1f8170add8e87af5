"""Alerts in a real project, on SQLite and PostgreSQL: the evaluator over the real event
log and metadata store, its events, actions and sinks; conveyor alerts and /v1/alerts;
a malformed rule failing the spec's loading."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alerts_support import http_receiver
from monitoring_support import START, predictions, write
from typer.testing import CliRunner

from conveyor.errors import ConveyorError
from conveyor.monitoring.alerts.evaluator import AlertLoop, Evaluator
from conveyor.monitoring.alerts.rules import AlertRule, derive_rules
from conveyor.monitoring.alerts.settings import ActionSpec, AlertsSpec, SinkSpec
from conveyor.monitoring.alerts.store import SqlStore
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer

MIN = timedelta(minutes=1)
RULE = AlertRule(
    "fraud_p95",
    "latency_p95_ms",
    "fraud",
    300,
    ">",
    5.0,
    120,
    "page",
    actions=(
        ActionSpec(kind="retrain"),
        ActionSpec(kind="review", note="look"),
        ActionSpec(kind="rollback"),
    ),
)


def _kinds(project: Project, prefix: str = "alert.") -> list[Any]:
    project.events.flush()
    page = project.events.query(kind=f"{prefix}*", limit=100)
    return list(page.items)


def test_an_incident_is_persisted_fires_its_event_and_actions_and_resolves(
    project: Project,
) -> None:
    with http_receiver() as http:
        settings = AlertsSpec(
            resolve_after="0s",
            sinks=[
                SinkSpec(name="hook", kind="webhook", url=f"{http.url}/ok/h"),
                SinkSpec(name="broken", kind="webhook", url=f"{http.url}/fail/b"),
            ],
            delivery={"retries": 1, "backoff_s": 0.01},
        )
        with Evaluator(project, settings=settings, rules=[RULE]) as alerts:
            for n in range(3):  # pending at 0, firing at 2 (for 2m)
                result = alerts.evaluate(START + n * MIN, {"fraud_p95": 9.0})
            assert [i.rule for i in result.fired] == ["fraud_p95"]
            alert_id = result.fired[0].id
            assert [a["action"] for a in result.actions] == ["retrain", "review", "rollback"]
            assert [a["ok"] for a in result.actions] == [True, True, False]  # no route yet
            # a new evaluator (a restart) goes on from the stored state
        with Evaluator(project, settings=settings, rules=[RULE]) as alerts:
            result = alerts.evaluate(START + 3 * MIN, {"fraud_p95": 9.5})
            assert result.fired == [] and result.notifications == []
            result = alerts.evaluate(START + 4 * MIN, {"fraud_p95": 1.0})
            assert [i.id for i in result.resolved] == [alert_id]
            assert alerts.dispatcher.drain(30)
        hooks = http.bodies("/ok/h")
    assert [h["status"] for h in hooks] == ["firing", "resolved"]
    store = SqlStore(project.store)
    (incident,) = store.incidents(state=None)
    assert incident.id == alert_id and incident.state == "resolved" and incident.count == 4
    assert store.reviews(alert_id)[0]["note"] == "look"
    sinks = {s["name"]: s for s in store.sinks()}
    assert sinks["hook"]["state"] == "ok" and sinks["hook"]["delivered"] == 2
    assert sinks["broken"]["state"] == "failing" and "500" in sinks["broken"]["last_error"]
    events = _kinds(project)
    kinds = [e.kind for e in events]
    assert kinds.count("alert.fired") == 1 and kinds.count("alert.resolved") == 1
    assert kinds.count("alert.delivery_failed") == 2
    linked = [e for e in events if e.payload.get("alert_id") == alert_id]
    assert {e.kind for e in linked} == {
        "alert.fired",
        "alert.resolved",
        "alert.action",
        "alert.retrain_requested",
    }
    retrain = next(e for e in events if e.kind == "alert.retrain_requested")
    assert retrain.subject == "fraud"
    failed = next(
        e for e in events if e.kind == "alert.action" and e.payload["action"] == "rollback"
    )
    assert failed.payload["ok"] is False and "fraud" in failed.payload["error"]


def test_rules_read_the_monitors_of_the_real_event_log(project: Project) -> None:
    from conveyor.monitoring.drift_live import DRIFT_CHECKED

    write(project, predictions(400, start=START))
    project.events.record(
        DRIFT_CHECKED,
        subject="fraud",
        payload={
            "version_id": "fraud-v3",
            "report_id": "r1",
            "verdict": "drift",
            "share": 0.4,
            "drifted": ["amount"],
            "metrics": {"drift.share": 0.4, "prediction_drift": 0.12},
            "compared": {},
        },
    )
    rules = [
        AlertRule("p95", "latency_p95_ms", "fraud", 3600, ">", 0.0, 0, "page"),
        AlertRule("avail", "availability", "fraud", 3600, "<", 0.5, 0, "page"),
        AlertRule("nobody", "latency_p95_ms", "nobody", 3600, ">", 0.0, 0, "page"),
        # the drift check was recorded now: a window ending now sees it
        AlertRule("drift", "drift.share", "fraud", 3600, ">", 0.3, 0, "ticket"),
        AlertRule("stale", "data.freshness_s", "tx", 3600, ">", 60, 0, "ticket"),
    ]
    with Evaluator(project, settings=AlertsSpec(), rules=rules) as alerts:
        values, errors = alerts.values(START + timedelta(minutes=15))
    assert errors == {}
    from conveyor.monitoring.query import MonitorQuery
    from conveyor.monitoring.system_query import system_summary

    expected = system_summary(
        MonitorQuery(project),
        "fraud",
        since=START + timedelta(minutes=15) - timedelta(hours=1),
        until=START + timedelta(minutes=15),
    )
    assert values["p95"] == pytest.approx(expected["latency_p95_ms"])
    assert values["avail"] == 1.0  # no failed request
    assert values["nobody"] is None  # no traffic: no data
    with Evaluator(project, settings=AlertsSpec(), rules=rules) as alerts:
        now_values, errors = alerts.values(datetime.now(UTC))
    assert errors == {}
    assert now_values["drift"] == 0.4
    assert now_values["stale"] is None  # no ingest of tx yet


def test_one_evaluator_at_a_time_holds_the_lease(project: Project) -> None:
    first, second = AlertLoop(project, AlertsSpec()), AlertLoop(project, AlertsSpec())
    assert first.tick(START) is not None
    assert second.tick(START + MIN) is None  # the first holds it (3 intervals)
    assert first.tick(START + 2 * MIN) is not None
    assert second.tick(START + 6 * MIN) is not None  # lapsed: taken over


# -- the CLI and HTTP (SQLite) ---------------------------------------------------------

SPEC = """
serving: {auth: disabled}
monitoring:
  alerts:
    rules:
      - {name: busy, metric: requests_per_s, op: ">", threshold: 0, for: 0s, model: fraud}
    sinks:
      - {name: hook, kind: webhook, url: "%s/ok/hook"}
      - {name: dead, kind: webhook, url: "%s/fail/dead"}
    delivery: {retries: 1, backoff_s: 0.01}
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Project, str, Any]]:
    with http_receiver() as http:
        root = tmp_path / "proj"
        init_project(root, name="watched")
        with (root / "conveyor.yaml").open("a") as spec:
            spec.write(SPEC % (http.url, http.url))
        with Project.open(root, env={}) as project:
            yield project, str(root), http


def _cli(root: str, *args: str) -> Any:
    from conveyor.cli import app

    return CliRunner().invoke(app, ["alerts", *args, "-C", root, "--json"])


def test_cli_lists_acks_silences_and_tests(served: tuple[Project, str, Any]) -> None:
    import json

    project, root, http = served
    with Evaluator(project) as alerts:
        fired = alerts.evaluate(START, {"busy": 3.0}).fired[0]
        assert alerts.dispatcher.drain(30)
    listed = json.loads(_cli(root, "list").stdout)
    assert [i["id"] for i in listed["items"]] == [fired.id]
    sinks = {s["name"]: s for s in listed["sinks"]}
    assert sinks["hook"]["state"] == "ok" and sinks["hook"]["delivered"] == 1
    assert sinks["dead"]["state"] == "failing" and "500" in sinks["dead"]["last_error"]
    from conveyor.cli import app

    plain = CliRunner().invoke(app, ["alerts", "list", "-C", root])
    assert "failing" in plain.stdout and "dead" in plain.stdout
    acked = json.loads(_cli(root, "ack", fired.id).stdout)
    assert acked["acked_by"].startswith("cli:")
    shown = json.loads(_cli(root, "show", fired.id).stdout)
    assert {d["sink"]: d["ok"] for d in shown["deliveries"]} == {"hook": True, "dead": False}
    silence = json.loads(_cli(root, "silence", "model=fraud", "--for", "2h").stdout)
    listed = json.loads(_cli(root, "list").stdout)
    assert [s["id"] for s in listed["silences"]] == [silence["id"]]
    _cli(root, "unsilence", silence["id"])
    assert json.loads(_cli(root, "list").stdout)["silences"] == []
    tested = _cli(root, "test")
    assert tested.exit_code == 1  # a sink failed
    results = {r["sink"]: r for r in json.loads(tested.stdout)["items"]}
    assert results["hook"]["ok"] and not results["dead"]["ok"]
    assert results["dead"]["attempts"] == 2
    assert http.bodies("/ok/hook")[-1]["kind"] == "test"
    bad = _cli(root, "silence", "model")
    assert bad.exit_code == 1 and "label=value" in bad.output
    missing = _cli(root, "ack", "nope")
    assert missing.exit_code == 1 and "no alert 'nope'" in missing.output
    rules = json.loads(_cli(root, "rules").stdout)["items"]
    assert "busy" in [r["name"] for r in rules]
    evaluated = _cli(root, "evaluate")
    assert evaluated.exit_code == 0, evaluated.output
    assert "busy" in json.loads(evaluated.stdout)["values"]
    # a server holding the evaluator's lease: the CLI does not evaluate beside it
    from datetime import UTC, datetime

    from conveyor.monitoring.alerts.store import take_lease

    assert take_lease(project.store, "server-1", 600, datetime.now(UTC) + timedelta(hours=1))
    held = _cli(root, "evaluate")
    assert held.exit_code == 1 and "lease" in held.output


def test_http_lists_acks_and_silences(served: tuple[Project, str, Any]) -> None:
    project, _, _ = served
    with Evaluator(project) as alerts:
        fired = alerts.evaluate(START, {"busy": 3.0}).fired[0]
    server = ThreadedServer(create_app(project))
    server.start()
    try:
        url = server.url
        listed = httpx.get(f"{url}/v1/alerts").json()
        assert [i["id"] for i in listed["items"]] == [fired.id]
        assert httpx.get(f"{url}/v1/alerts?state=resolved").json()["items"] == []
        bad_state = httpx.get(f"{url}/v1/alerts?state=nope")
        assert bad_state.status_code == 422 and bad_state.json()["field"] == "state"
        assert httpx.get(f"{url}/v1/alerts/{fired.id}").json()["rule"] == "busy"
        assert httpx.get(f"{url}/v1/alerts/nope").status_code == 404
        acked = httpx.post(f"{url}/v1/alerts/{fired.id}/ack").json()
        assert acked["acked_at"] is not None
        made = httpx.post(
            f"{url}/v1/silences", json={"matchers": {"model": "fraud"}, "duration": "1h"}
        )
        assert made.status_code == 201
        silence_id = made.json()["id"]
        assert [s["id"] for s in httpx.get(f"{url}/v1/silences").json()["items"]] == [silence_id]
        for body, field in (
            ({}, "matchers"),
            ({"matchers": {"model": 3}}, "matchers"),
            ({"matchers": {"model": "a"}, "duration": "forever"}, "duration"),
            ({"matchers": {"model": "a"}, "ends_at": "2020-01-01T00:00:00"}, "ends_at"),
            ({"matchers": {"model": "a"}, "duration": "90d"}, "ends_at"),
            ({"matchers": {"model": "a"}, "colour": "red"}, "colour"),
        ):
            refused = httpx.post(f"{url}/v1/silences", json=body)
            assert refused.status_code == 422, (body, refused.text)
            assert refused.json()["field"] == field, (body, refused.text)
        not_json = httpx.post(
            f"{url}/v1/silences", content=b"{", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400
        ended = httpx.delete(f"{url}/v1/silences/{silence_id}").json()
        assert ended["ends_at"] <= datetime_now_iso()
        assert httpx.delete(f"{url}/v1/silences/nope").status_code == 404
        tested = httpx.post(f"{url}/v1/alerts/test", json={"severity": "page"}, timeout=60)
        results = {r["sink"]: r["ok"] for r in tested.json()["items"]}
        assert results == {"hook": True, "dead": False}
        refused = httpx.post(f"{url}/v1/alerts/test", json={"severity": "urgent"})
        assert refused.status_code == 422 and refused.json()["field"] == "severity"
    finally:
        server.stop()
    events = [e.kind for e in _kinds(project)]
    assert {"alert.acknowledged", "alert.silenced", "alert.unsilenced"} <= set(events)


def datetime_now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


# -- a malformed rule ---------------------------------------------------------------------

BAD_RULE = """
monitoring:
  alerts:
    rules:
      - {name: fine, metric: error_rate, op: ">", threshold: 0.1}
      - {name: typo, metric: latency_p95, op: ">=", threshold: 50}
"""


def test_a_malformed_rule_fails_the_spec_naming_the_rule_and_field(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    init_project(root, name="watched")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(BAD_RULE)
    with pytest.raises(ConveyorError) as caught:
        Project.open(root, env={})
    message = caught.value.message
    assert "monitoring.alerts.rules.1.metric" in message and "latency_p95" in message
    assert "monitoring.alerts.rules.1.op" in message
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    doctor = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "doctor", "-C", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert doctor.returncode != 0
    assert "monitoring.alerts.rules.1" in doctor.stdout + doctor.stderr


def test_slo_rules_are_derived_per_model(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    init_project(root, name="watched")
    with Project.open(root, env={}) as project:
        rules = {r.name: r for r in derive_rules(project.spec)}
    # the template's slos: latency_p95_ms 50, availability 0.999 (no models: all traffic)
    assert rules["slo_latency_p95_ms"].threshold == 50 and rules["slo_latency_p95_ms"].op == ">"
    assert rules["slo_availability"].op == "<" and rules["slo_availability"].model is None
    assert "slo_quality" not in rules  # quality is a model's


# -- end to end: the server's own loop, real traffic, a rollback ------------------------

SERVED = """
serving: {auth: disabled, poll_interval_s: 0.2}
monitoring:
  alerts:
    evaluation_interval_s: 1
    slo_rules: false
    rules:
      - {name: m_errors, metric: error_rate, model: m, window: 10m, op: ">", threshold: 0.2,
         for: 0s, severity: page, actions: [{kind: rollback}]}
    sinks:
      - {name: hook, kind: webhook, url: "%s/ok/hook"}
"""


def test_the_server_evaluates_fires_on_real_errors_notifies_and_rolls_back(
    tmp_path: Path,
) -> None:
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy
    from conveyor.testing.wait import wait_until

    with http_receiver() as http:
        init_project(tmp_path, name="rolled")
        with (tmp_path / "conveyor.yaml").open("a") as f:
            f.write(SERVED % http.url)
        with Project.open(tmp_path, env={}) as project:
            X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 2.0]})
            for _ in range(2):
                project.registry.register(
                    "m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X
                )
            routes = RouteStore(project.store, project.events, project.registry)
            routes.set("m", RoutePolicy.fixed(1), actor="test")
            routes.set("m", RoutePolicy.fixed(2), actor="test")
            with ThreadedServer(create_app(project)) as running:
                predict = f"{running.url}/v1/models/m/predict"
                for _ in range(4):
                    assert httpx.post(predict, json={"records": [{"a": 1.0, "b": 2.0}]}).is_success
                for _ in range(4):  # a column missing: 422, half the requests fail
                    assert httpx.post(predict, json={"records": [{"a": 1.0}]}).status_code == 422
                wait_until(
                    lambda: http.bodies("/ok/hook"),
                    message="the server's loop fired m_errors and notified",
                    timeout=30,
                )
            note = http.bodies("/ok/hook")[0]
            assert note["status"] == "firing" and note["alerts"][0]["rule"] == "m_errors"
            assert note["alerts"][0]["value"] == pytest.approx(0.5)
            state = routes.get("m")
            assert state.policy.serving_versions() == (1,)  # rolled back from 2
            assert note["alerts"][0]["id"] in (state.reason or "")
            actions = [e for e in _kinds(project) if e.kind == "alert.action"]
            assert actions[0].payload["ok"] is True
            assert actions[0].payload["alert_id"] == note["alerts"][0]["id"]


def test_a_metric_that_raises_is_no_data_for_its_rule_only(project: Project) -> None:
    from conveyor.monitoring.alerts.metrics import _REGISTERED, register_metric

    def broken(*args: Any) -> float:
        raise ZeroDivisionError("the monitor's bug")

    register_metric("test.broken", broken)
    try:
        rules = [
            AlertRule("broken", "test.broken", None, 60, ">", 0, 0, "info"),
            AlertRule("rate", "requests_per_s", None, 60, ">", 100, 0, "info"),
            AlertRule("unknown", "no.such.metric", None, 60, ">", 0, 0, "info"),
        ]
        with Evaluator(project, settings=AlertsSpec(), rules=rules) as alerts:
            result = alerts.evaluate(START)
    finally:
        _REGISTERED.pop("test.broken")
    assert result.values == {"broken": None, "rate": 0.0, "unknown": None}
    assert "ZeroDivisionError" in result.errors["broken"]
    assert "no monitor computes the metric 'no.such.metric'" in result.errors["unknown"]


def test_a_retrain_action_starts_the_models_retraining_trigger(project: Project) -> None:
    """The model's retraining pipeline listens for alert.retrain_requested (its
    retrain.on_events): the alert's action is what fires it."""
    from conveyor.training.continuous import retraining_triggers
    from conveyor.training.settings import ModelSpec

    spec = ModelSpec(
        train="pkg.train:fit",
        dataset="tx",
        target="y",
        features=["a"],
        retrain={"on_events": ["alert.retrain_requested"]},
    )
    # One trigger for events about the model, one for events about its data set.
    trigger, about_data = retraining_triggers("fraud", spec)
    assert (trigger.subject, about_data.subject) == ("fraud", "tx")
    armed = trigger.poll(project.store, {}, events=project.events)
    assert armed is not None and armed.run is False
    other = retraining_triggers("other", spec.model_copy(update={"dataset": "other_tx"}))[0]
    other_armed = other.poll(project.store, {}, events=project.events)
    assert other_armed is not None
    rule = AlertRule(
        "fraud_drift",
        "drift.share",
        "fraud",
        3600,
        ">",
        0.3,
        0,
        "ticket",
        actions=(ActionSpec(kind="retrain"),),
    )
    with Evaluator(project, settings=AlertsSpec(), rules=[rule]) as alerts:
        fired = alerts.evaluate(START, {"fraud_drift": 0.6}).fired[0]
    project.events.flush()
    firing = trigger.poll(project.store, armed.state, events=project.events)
    assert firing is not None and firing.run
    (event_id,) = firing.reason["event_ids"]
    (requested,) = [e for e in _kinds(project) if e.kind == "alert.retrain_requested"]
    assert requested.id == event_id and requested.payload["alert_id"] == fired.id
    # fraud's alert asks fraud to retrain, not another model listening for the kind.
    assert other.poll(project.store, other_armed.state, events=project.events) is None


def test_an_ack_during_an_evaluation_is_not_lost(project: Project) -> None:
    rule = AlertRule("r", "error_rate", "fraud", 60, ">", 0.1, 0, "page")
    with Evaluator(project, settings=AlertsSpec(), rules=[rule]) as alerts:
        fired = alerts.evaluate(START, {"r": 0.5}).fired[0]
        store = alerts.store
        (stale,) = store.open_incidents().values()  # what an evaluation read
        store.ack(fired.id, by="key:oncall")  # meanwhile, someone acknowledges
        stale.count += 1
        store.save([stale], [])  # the evaluation writes what it decided
        kept = store.incident(fired.id)
        assert kept.acked_by == "key:oncall" and kept.count == 2
        # and the acknowledged incident is not repeated
        later = alerts.evaluate(START + timedelta(hours=5), {"r": 0.5})
        assert later.notifications == []
