"""Interop: the Prometheus rules and the Grafana dashboard generated from the spec.

The rule file passes ``promtool check rules`` and mirrors Conveyor's own alert rules (name,
threshold, ``for``, severity); the dashboard has the shape of Grafana's dashboard schema
and reads back through Grafana's own types; its queries are valid PromQL. One test runs a
real Prometheus against a real ``conveyor serve``: the latency alert fires during injected
slowness, and Conveyor's own reading of its event log agrees.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from interop_support import Sleepy, prometheus, promtool_check, tool
from typer.testing import CliRunner

from conveyor.config import load_spec
from conveyor.errors import ConfigError, InvalidInputError
from conveyor.monitoring.alerts.rules import AlertRule, derive_rules
from conveyor.monitoring.alerts.settings import SYSTEM_METRICS
from conveyor.monitoring.interop.grafana import dashboard
from conveyor.monitoring.interop.names import MONITORS, prom_duration
from conveyor.monitoring.interop.prometheus import (
    alerting_rules,
    label_name,
    prometheus_config,
    rules_document,
    rules_yaml,
)
from conveyor.project import Project, init_project
from conveyor.testing.ports import worker_port
from conveyor.testing.wait import wait_until

SPEC = """\
slos:
  latency_p95_ms: 100
  availability: 0.99
  throughput_rps: 50
  quality: {metric: roc_auc, floor: 0.8}
monitoring:
  alerts:
    slo_window: 10s
    slo_for: 2s
    max_error_rate: 0.2
    rules:
      - name: m_latency_p95
        metric: latency_p95_ms
        model: m
        window: 10s
        op: ">"
        threshold: 100
        for: 1s
        severity: page
        labels: {team: ml, owner.email: ops@example.com}
      - {name: m_drift, metric: drift.share, model: m, window: 1h, op: ">", threshold: 0.3}
      - {name: m_cache, metric: cache_hit_ratio, model: m, window: 90s, op: "<", threshold: 0.5}
  interop:
    matchers: 'job="conveyor"'
    rule_interval: 1s
"""


def _project_root(root: Path, extra: str = SPEC) -> Path:
    init_project(root, name="interop")
    with (root / "conveyor.yaml").open("a") as f:
        f.write(extra)
    return root


# -- Prometheus rules -------------------------------------------------------------------------


def test_rules_pass_promtool_and_mirror_conveyors_own(tmp_path: Path) -> None:
    spec = load_spec(_project_root(tmp_path / "p"))
    conveyor_rules = derive_rules(spec)
    text = rules_yaml(spec)
    path = tmp_path / "conveyor.rules.yml"
    path.write_text(text)
    checked = promtool_check(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    document = yaml.safe_load(text)
    recording, alerting = document["groups"]
    assert recording["interval"] == alerting["interval"] == "1s"
    recorded = {r["record"]: r["expr"] for r in recording["rules"]}
    # Every monitor over every window of the spec and of the per-model alert rules.
    for window in ("5m", "1h", "10s", "1m30s"):
        for name in MONITORS:
            assert f"conveyor:{name}:{window}" in recorded
    # The spec's matchers limit every series the rules read.
    assert all('job="conveyor"' in expr for expr in recorded.values())

    alerts = {a["alert"]: a for a in alerting["rules"]}
    left_to_conveyor = [r for r in conveyor_rules if r.metric not in MONITORS]
    assert {r.metric for r in left_to_conveyor} == {"drift.share"}
    assert set(alerts) == {r.name for r in conveyor_rules} | {"conveyor_target_down"}
    # The one Prometheus adds: a server it cannot scrape (its own evaluation is down too).
    down = alerts["conveyor_target_down"]
    assert down["expr"] == 'up{job="conveyor"} == 0' and down["for"] == "2s"
    assert down["labels"] == {"severity": "page", "metric": "availability", "source": "prometheus"}
    for rule in conveyor_rules:
        alert = alerts[rule.name]
        assert alert["expr"].endswith(f" {rule.op} {rule.threshold!r}")
        assert alert.get("for") == (prom_duration(rule.for_s) if rule.for_s else None)
        # An alert resolves as Conveyor's does: after resolve_after (5m by default) clear.
        assert alert["keep_firing_for"] == "5m"
        assert alert["labels"]["severity"] == rule.severity
        assert alert["labels"]["metric"] == rule.metric
        if rule.metric not in MONITORS:
            continue  # below
        if rule.model is None:  # all traffic: one series over every model
            assert "sum by (" in alert["expr"] and "model" not in alert["expr"]
        else:
            window = prom_duration(rule.window)
            assert alert["expr"].startswith(f'conveyor:{rule.metric}:{window}{{model="m"}} ')
    # A label key Prometheus would refuse is made a valid label name, its value kept.
    assert alerts["m_latency_p95"]["labels"]["owner_email"] == "ops@example.com"
    # Rules on monitors computed from the event log read the values Conveyor exports for
    # them (GET /v1/monitor/metrics), and the header says so.
    for rule in left_to_conveyor:
        model = rule.model or ""
        window = prom_duration(rule.window)
        assert alerts[rule.name]["expr"] == (
            f'conveyor_monitor{{monitor="{rule.metric}",model="{model}",window="{window}"}} '
            f"{rule.op} {rule.threshold!r}"
        )
    assert "#   m_drift (drift.share)" in text
    assert "GET /v1/monitor/metrics" in text


def test_every_system_metric_of_the_alerts_has_a_prometheus_expression() -> None:
    # The names are shared: an alert rule on any system metric translates.
    assert set(SYSTEM_METRICS) <= set(MONITORS)


def test_rule_translation_refuses_what_promql_cannot_say() -> None:
    bad_op = AlertRule("x", "latency_p95_ms", "m", 60, "!=", 1.0, 0, "page")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="op '!='") as caught:
        alerting_rules([bad_op])
    assert caught.value.code == "invalid_input"
    nan = AlertRule("x", "latency_p95_ms", "m", 60, ">", math.nan, 0, "page")
    with pytest.raises(InvalidInputError, match="not a finite number"):
        alerting_rules([nan])
    assert label_name("owner.email") == "owner_email"
    assert label_name("9lives") == "_9lives"
    assert label_name("__name__") == "label__name__"
    assert prom_duration(5400) == "1h30m" and prom_duration(0.2) == "1s"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("matchers: 'job=conveyor'", "monitoring.interop.matchers"),
        ("windows: [5 minutes]", "monitoring.interop.windows"),
        ("rule_interval: soon", "monitoring.interop.rule_interval"),
        ("datasource: ''", "monitoring.interop.datasource"),
    ],
)
def test_a_malformed_interop_setting_fails_the_spec(
    tmp_path: Path, setting: str, message: str
) -> None:
    root = _project_root(tmp_path, f"monitoring:\n  interop:\n    {setting}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_spec(root)
    assert caught.value.code == "config_invalid"


# -- Grafana dashboard ------------------------------------------------------------------------

_GRID = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
    },
}
_DATASOURCE_REF = {
    "type": "object",
    "properties": {"type": {"type": "string"}, "uid": {"type": "string"}},
    "additionalProperties": False,
}
#: A faithful subset of Grafana's dashboard schema (the dashboard kind, schemaVersion 39):
#: the fields it requires, their types and enumerations, for what the generator writes.
GRAFANA_DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "schemaVersion", "panels"],
    "properties": {
        "uid": {"type": "string", "maxLength": 40, "pattern": "^[A-Za-z0-9_-]+$"},
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "timezone": {"type": "string"},
        "editable": {"type": "boolean"},
        "graphTooltip": {"enum": [0, 1, 2]},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": {"type": "integer", "minimum": 0},
        "refresh": {"anyOf": [{"type": "string"}, {"const": False}]},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "annotations": {
            "type": "object",
            "properties": {
                "list": {
                    "type": "array",
                    "items": {  # AnnotationQuery: these four are required
                        "type": "object",
                        "required": ["name", "datasource", "enable", "iconColor"],
                        "properties": {
                            "name": {"type": "string"},
                            "datasource": _DATASOURCE_REF,
                            "enable": {"type": "boolean"},
                            "iconColor": {"type": "string"},
                            "expr": {"type": "string"},
                        },
                    },
                }
            },
        },
        "links": {"type": "array"},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                            "type": {
                                "enum": [
                                    "query",
                                    "adhoc",
                                    "groupby",
                                    "constant",
                                    "datasource",
                                    "interval",
                                    "textbox",
                                    "custom",
                                    "system",
                                    "snapshot",
                                ]
                            },
                            "hide": {"enum": [0, 1, 2]},
                            "refresh": {"enum": [0, 1, 2]},
                            "sort": {"enum": [0, 1, 2, 3, 4, 5, 6, 7, 8]},
                            "multi": {"type": "boolean"},
                            "includeAll": {"type": "boolean"},
                            "datasource": _DATASOURCE_REF,
                            "options": {"type": "array"},
                        },
                    },
                }
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["type", "id", "gridPos"],
                "properties": {
                    "type": {"type": "string", "minLength": 1},
                    "id": {"type": "integer", "minimum": 1},
                    "title": {"type": "string"},
                    "gridPos": _GRID,
                    "datasource": _DATASOURCE_REF,
                    "collapsed": {"type": "boolean"},
                    "panels": {"type": "array"},
                    "targets": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["refId"],
                            "properties": {
                                "refId": {"type": "string", "minLength": 1},
                                "datasource": _DATASOURCE_REF,
                                "expr": {"type": "string", "minLength": 1},
                                "legendFormat": {"type": "string"},
                                "range": {"type": "boolean"},
                            },
                        },
                    },
                    "fieldConfig": {
                        "type": "object",
                        "required": ["defaults", "overrides"],
                        "properties": {
                            "defaults": {
                                "type": "object",
                                "properties": {
                                    "unit": {"type": "string"},
                                    "thresholds": {
                                        "type": "object",
                                        "required": ["mode", "steps"],
                                        "properties": {
                                            "mode": {"enum": ["absolute", "percentage"]},
                                            "steps": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "required": ["color", "value"],
                                                    "properties": {
                                                        "color": {"type": "string"},
                                                        "value": {"type": ["number", "null"]},
                                                    },
                                                },
                                            },
                                        },
                                    },
                                },
                            },
                            "overrides": {"type": "array"},
                        },
                    },
                    "options": {"type": "object"},
                },
                "allOf": [
                    {  # every panel but a row: its options and field config (Panel in the kind)
                        "if": {"not": {"properties": {"type": {"const": "row"}}}},
                        "then": {"required": ["fieldConfig", "options"]},
                    },
                    {  # a panel that draws: its queries and their data source
                        "if": {"properties": {"type": {"const": "timeseries"}}},
                        "then": {"required": ["targets", "datasource"]},
                    },
                    {
                        "if": {"properties": {"type": {"const": "row"}}},
                        "then": {"required": ["collapsed", "panels"]},
                    },
                ],
            },
        },
    },
}


@pytest.fixture
def board(tmp_path: Path) -> dict[str, Any]:
    return dashboard(load_spec(_project_root(tmp_path / "p")))


def test_dashboard_has_grafanas_shape(board: dict[str, Any]) -> None:
    jsonschema.validate(board, GRAFANA_DASHBOARD_SCHEMA)
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    # No two panels overlap on the 24-column grid, and none spills over its right edge.
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    # Every query goes to the datasource variable, which exists and is a Prometheus one.
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    drawn = [p for p in panels if p["type"] == "timeseries"]
    for panel in drawn:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            if not target["expr"].startswith("conveyor_monitor{"):  # another scrape job
                assert 'job="conveyor"' in target["expr"]  # the spec's matchers
    # The panels cover every monitor Prometheus can compute.
    described = " ".join(p["description"] for p in drawn)
    assert all(f"{name}:" in described for name in MONITORS)
    # The SLO's threshold is drawn on the latency panel, red above it.
    latency = next(p for p in drawn if p["title"] == "Latency p50 / p95 / p99")
    steps = latency["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [{"color": "green", "value": None}, {"color": "red", "value": 100.0}]
    availability = next(p for p in drawn if p["title"] == "Availability")
    steps = availability["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [{"color": "red", "value": None}, {"color": "green", "value": 0.99}]
    rate = next(p for p in drawn if p["title"] == "Requests per second")  # throughput_rps
    steps = rate["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [{"color": "red", "value": None}, {"color": "green", "value": 50.0}]


def test_dashboard_reads_back_through_grafanas_own_types(board: dict[str, Any]) -> None:
    from grafana_foundation_sdk.models.dashboard import Dashboard

    # Keys Grafana's dashboard model does not know are dropped on the way through: the
    # board must come back with every key and value it had.
    again = Dashboard.from_json(json.loads(json.dumps(board))).to_json()
    again = json.loads(json.dumps(again, default=lambda o: o.to_json()))
    lost: list[str] = []

    def compare(mine: Any, theirs: Any, where: str) -> None:
        if isinstance(mine, dict):
            for key, value in mine.items():
                if not isinstance(theirs, dict) or key not in theirs:
                    lost.append(f"{where}.{key}")
                else:
                    compare(value, theirs[key], f"{where}.{key}")
        elif isinstance(mine, list):
            if not isinstance(theirs, list) or len(theirs) != len(mine):
                lost.append(where)
                return
            for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
                compare(a, b, f"{where}[{i}]")
        elif mine != theirs:
            lost.append(f"{where}: {mine!r} != {theirs!r}")

    compare(board, again, "dashboard")
    assert lost == []


def test_every_dashboard_query_is_valid_promql(board: dict[str, Any], tmp_path: Path) -> None:
    # promtool parses each query as a recording rule's expression (Grafana's variables
    # replaced by what Grafana would send).
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    queries += [a["expr"] for a in board["annotations"]["list"]]
    exprs = [q.replace("$__rate_interval", "1m").replace("$model", ".*") for q in queries]
    assert len(exprs) >= 15
    variable = board["templating"]["list"][1]["query"]["query"]
    assert variable == 'label_values(conveyor_requests_total{job="conveyor"}, model)'
    path = tmp_path / "queries.yml"
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool_check(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- CLI and HTTP ---------------------------------------------------------------------------


def test_cli_writes_the_dashboard_and_the_checked_rules(tmp_path: Path) -> None:
    from conveyor.cli import app

    root = _project_root(tmp_path / "p")
    runner = CliRunner()
    out = tmp_path / "board.json"
    done = runner.invoke(app, ["monitor", "grafana", "-o", str(out), "-C", str(root)])
    assert done.exit_code == 0, done.output
    written = json.loads(out.read_text())
    assert written == dashboard(load_spec(root))
    assert "conveyor-interop" in done.output

    rules = tmp_path / "rules.yml"
    done = runner.invoke(
        app, ["monitor", "prometheus-rules", "-o", str(rules), "--check", "-C", str(root)]
    )
    assert done.exit_code == 0, done.output
    assert "SUCCESS" in done.output
    assert yaml.safe_load(rules.read_text()) == rules_document(load_spec(root))[0]

    printed = runner.invoke(app, ["monitor", "prometheus-rules", "-C", str(root)])
    assert printed.exit_code == 0 and yaml.safe_load(printed.stdout) == yaml.safe_load(
        rules.read_text()
    )
    # A prometheus.yml loading those rules, checked by promtool with them.
    (tmp_path / "viewer.key").write_text("a-viewer-key\n")
    config = tmp_path / "prometheus.yml"
    done = runner.invoke(
        app,
        [
            "monitor",
            "prometheus-config",
            "--target",
            "127.0.0.1:8000",
            "--target",
            "web-2:8000",
            "--key-file",
            "viewer.key",
            "--rules-file",
            "rules.yml",
            "-o",
            str(config),
            "--check",
            "-C",
            str(root),
        ],
    )
    assert done.exit_code == 0, done.output
    assert "SUCCESS" in done.output
    jobs = {j["job_name"]: j for j in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert jobs["conveyor"]["static_configs"] == [{"targets": ["127.0.0.1:8000", "web-2:8000"]}]
    assert jobs["conveyor-monitors"]["metrics_path"] == "/v1/monitor/metrics"
    assert jobs["conveyor-monitors"]["authorization"] == {"credentials_file": "viewer.key"}
    # A rule file that is not there: promtool refuses the configuration, a failed check.
    refused = runner.invoke(
        app,
        [
            "monitor",
            "prometheus-config",
            "--target",
            "web-2:8000",
            "--rules-file",
            "missing.rules.yml",
            "-o",
            str(tmp_path / "other.yml"),
            "--check",
            "-C",
            str(root),
        ],
    )
    assert refused.exit_code == 3, refused.output
    assert "FAIL: promtool check config refused it" in refused.output
    assert "missing.rules.yml" in refused.output
    bad = runner.invoke(app, ["monitor", "prometheus-config", "--target", "web-2", "-C", str(root)])
    assert bad.exit_code == 1 and "host:port" in bad.output

    # A uid Grafana would refuse: refused here, naming it.
    bad_uid = runner.invoke(app, ["monitor", "grafana", "--uid", "a/b", "-C", str(root)])
    assert bad_uid.exit_code == 1 and "uid 'a/b'" in bad_uid.output

    # Nowhere to write: a typed error naming the option, exit 1.
    refused = runner.invoke(
        app, ["monitor", "grafana", "-o", str(tmp_path / "no" / "such" / "b.json"), "-C", str(root)]
    )
    assert refused.exit_code == 1 and "--output" in refused.output


def test_check_without_promtool_says_how_to_get_it(tmp_path: Path) -> None:
    from conveyor.cli import app

    root = _project_root(tmp_path / "p")
    done = CliRunner().invoke(
        app,
        ["monitor", "prometheus-rules", "--check", "-C", str(root)],
        env={"PATH": str(tmp_path)},  # no promtool there
    )
    assert done.exit_code == 1
    assert "promtool" in done.output and "apt-get install prometheus" in done.output


# -- A real Prometheus against a real server --------------------------------------------------


class _Traffic:
    """Prediction requests to model ``m``, about ten a second, from a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.failed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                # A new row each time: a cached answer would hide the slowness.
                body = {"records": [{"a": float(self.sent), "b": 2.0}]}
                answer = client.post(f"{self.url}/v1/models/m/predict", json=body)
                self.sent += 1
                if answer.status_code != 200:
                    self.failed.append(answer.status_code)
                self._stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@contextmanager
def _serve(root: Path, port: int) -> Iterator[str]:
    """``conveyor serve`` of the project at ``root`` on ``port``, until the block ends."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    log = (root / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "serve", "--port", str(port), "-C", str(root)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"conveyor serve exited: {_tail(root / 'serve.log')}")
            try:
                return httpx.get(f"{url}/v2/models/m/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=60, interval=0.1, message="conveyor serve to serve model m")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


def _firing(prom: Any) -> set[str]:
    return {a["labels"]["alertname"] for a in prom.alerts() if a["state"] == "firing"}


@pytest.mark.slow
def test_prometheus_fires_the_latency_alert_with_conveyor(tmp_path: Path) -> None:
    """A real Prometheus scrapes a real ``conveyor serve`` every second and evaluates the
    generated rules every second; the route moves to a version that sleeps 0.3 s, and the
    p95 latency alerts (the SLO's on all traffic, the spec's on model m) fire. Conveyor's
    own rules say the same: same names and thresholds, its p95 from the event log breaches
    the threshold during the slow period and not before, and its alert engine, replayed
    over the run, fires the same two alerts after the slowness began."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    root = _project_root(
        tmp_path / "p",
        # resolve_after 0s: an alert a slow first request might fire clears at once.
        SPEC.replace("    slo_for: 2s\n", "    slo_for: 2s\n    resolve_after: 0s\n")
        + "serving: {auth: disabled, poll_interval_s: 0.2, batching: {max_batch_size: 1}}\n",
    )
    with Project.open(root, env={}) as project:
        X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 2.0]})
        project.registry.register("m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X)
        project.registry.register("m", Sleepy(0.3), signature_from=X)
        routes = RouteStore(project.store, project.events, project.registry)
        routes.set("m", RoutePolicy.fixed(1), actor="test")
        spec = project.spec
    rules = {r.name: r for r in derive_rules(spec)}
    latency = ["slo_latency_p95_ms", "m_latency_p95"]
    assert {n: (rules[n].threshold, rules[n].op) for n in latency} == {
        "slo_latency_p95_ms": (100.0, ">"),
        "m_latency_p95": (100.0, ">"),
    }
    rule_file = tmp_path / "conveyor.rules.yml"
    rule_file.write_text(rules_yaml(spec))

    # Prometheus starts while the server does (its target is down until then), with the
    # configuration Conveyor generates: its /metrics every second, the rules every second.
    port = worker_port()
    config = prometheus_config(
        spec, [f"127.0.0.1:{port}"], rules_file=str(rule_file), scrape_interval="1s"
    )
    assert config["global"]["evaluation_interval"] == "1s"  # monitoring.interop.rule_interval
    with prometheus(tmp_path / "prometheus", config) as prom:
        with _serve(root, port) as url, _Traffic(url) as traffic:
            # Baseline: Prometheus reads the server and evaluates every rule; the p95 is
            # under the threshold and no latency alert fires (waited for: a first request
            # slowed by a loaded machine may sit in the window for a few seconds).
            wait_until(
                lambda: (
                    prom.query('conveyor:latency_p95_ms:10s{model="m"} < 100')
                    and not _firing(prom) & set(latency)
                ),
                timeout=30,
                interval=0.25,
                message="Prometheus to record m's p95 latency under 100 ms, no alert firing",
            )
            fast_from = datetime.now(UTC)
            assert prom.targets_up()
            assert all(r["health"] == "ok" for r in prom.rules()), [
                (r["name"], r.get("lastError")) for r in prom.rules() if r["health"] != "ok"
            ]
            assert prom.query('conveyor:requests_per_s:10s{model="m"} > 0')

            # Slowness: every request now takes 0.3 s or more.
            slow_from = datetime.now(UTC)
            routes_after = Project.open(root, env={})
            try:
                RouteStore(routes_after.store, routes_after.events, routes_after.registry).set(
                    "m", RoutePolicy.fixed(2), actor="test"
                )
            finally:
                routes_after.close()
            fired = wait_until(
                lambda: set(latency) <= _firing(prom) and _firing(prom),
                timeout=30,
                interval=0.25,
                message=lambda: (
                    f"the latency alerts to fire: alerts {prom.alerts()}, p95 "
                    f"{prom.query('conveyor:latency_p95_ms:10s')}, requests {traffic.sent}, "
                    f"failed {traffic.failed[-5:]}, models {httpx.get(url + '/v1/models').text}"
                ),
            )
            assert set(latency) <= fired
            alerts = {a["labels"]["alertname"]: a for a in prom.alerts()}
            for name in latency:
                assert alerts[name]["labels"]["severity"] == rules[name].severity
                assert float(alerts[name]["value"]) > rules[name].threshold
            assert alerts["m_latency_p95"]["labels"]["model"] == "m"
            # Nothing else fired: no errors, full availability (shares of zero, not "no data").
            assert fired <= set(latency) | {"m_cache"}, fired
            (availability,) = prom.query('conveyor:availability:10s{model="m"}')
            assert float(availability["value"][1]) == 1.0
            slow_until = datetime.now(UTC)
        assert traffic.failed == []

    # Conveyor's own rules, on its own reading of the event log, agree: below the
    # threshold before the slowness, above it during, for the same rules.
    from conveyor.monitoring.alerts.metrics import metric_value

    with Project.open(root, env={}) as project:
        for name in latency:
            rule = rules[name]
            # The window Prometheus had just judged calm.
            before = metric_value(
                project, rule.metric, rule.model, fast_from - timedelta(seconds=10), fast_from
            )
            during = metric_value(
                project, rule.metric, rule.model, slow_from + timedelta(seconds=1), slow_until
            )
            assert before is not None and not rule.breached(before), (name, before)
            assert during is not None and rule.breached(during), (name, during)

    # And Conveyor's own alert engine, replayed second by second over the run, fires the
    # same two alerts, only after the slowness began.
    from conveyor.monitoring.alerts.evaluator import Evaluator

    fired_at: dict[str, datetime] = {}
    with (
        Project.open(root, env={}) as project,
        Evaluator(project, rules=[rules[n] for n in latency]) as evaluator,
    ):
        moment = fast_from
        # Past slow_until by the rules' `for` (2 s) and a step: Prometheus fired on its own
        # evaluation ticks, and a replay stepping whole seconds from another phase can
        # reach the same sustained breach a step later (seen on a loaded machine).
        while moment <= slow_until + timedelta(seconds=3):
            for incident in evaluator.evaluate(now=moment).fired:
                fired_at.setdefault(incident.rule, moment)
            moment += timedelta(seconds=1)
    assert set(fired_at) == set(latency)
    assert all(at > slow_from for at in fired_at.values()), fired_at


# -- Event-log monitors exported to Prometheus ------------------------------------------------

EXPORT_SPEC = """\
serving: {auth: required}
monitoring:
  alerts:
    rules:
      - {name: m_mae, metric: quality.mae, model: m, window: 1h, op: ">", threshold: 1.0}
      - {name: m_drift, metric: drift.share, model: m, window: 1h, op: ">", threshold: 0.3}
  interop:
    export_interval_s: 1
"""


def test_event_log_monitors_are_exported_and_alerted_on_as_conveyor_computes_them(
    tmp_path: Path,
) -> None:
    """Predictions through the real server, their labels through ``POST /v1/feedback``
    (each 2.0 above the answer): ``GET /v1/monitor/metrics`` exports the MAE Conveyor's own
    rule computes (2.0); a real Prometheus with the generated configuration scrapes it with
    a viewer key and fires the generated ``m_mae``, and so does its rule engine under
    ``promtool test rules``. A monitor with no data (no drift check yet) is left out; no
    key, no monitors. The same server serves the dashboard and the rule file."""
    import pandas as pd
    from prometheus_client.parser import text_string_to_metric_families
    from sklearn.linear_model import LinearRegression

    from conveyor.governance.keys import ApiKeys
    from conveyor.monitoring.alerts.metrics import metric_value
    from conveyor.serving.app import create_app
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy
    from conveyor.serving.server import ThreadedServer

    root = _project_root(tmp_path / "p", EXPORT_SPEC)
    with Project.open(root, env={}) as project:
        X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 2.0]})
        project.registry.register("m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X)
        RouteStore(project.store, project.events, project.registry).set(
            "m", RoutePolicy.fixed(1), actor="test"
        )
        keys = ApiKeys(project.store, project.events)
        keys.create("admin", "admin")
        predictor, _ = keys.create("app", "predictor")
        viewer, _ = keys.create("prometheus", "viewer")
        (tmp_path / "viewer.key").write_text(viewer + "\n")
        headers = {"authorization": f"Bearer {predictor}"}
        spec = project.spec
        rule_file = tmp_path / "conveyor.rules.yml"
        rule_file.write_text(rules_yaml(spec))
        with (
            ThreadedServer(create_app(project)) as server,
            httpx.Client(timeout=10, headers=headers) as client,
            # A real Prometheus with the generated configuration, both jobs sending the
            # viewer key (started now: it takes its targets in about 5 s).
            prometheus(
                tmp_path / "prometheus",
                prometheus_config(
                    spec,
                    [server.url.removeprefix("http://")],
                    rules_file=str(rule_file),
                    key_file=str(tmp_path / "viewer.key"),
                    scrape_interval="1s",
                    monitors_interval="1s",
                ),
            ) as prom,
        ):
            feedback = []
            for i in range(12):
                answer = client.post(
                    f"{server.url}/v1/models/m/predict",
                    json={"records": [{"a": float(i), "b": 1.0}]},
                )
                assert answer.status_code == 200, answer.text
                predicted = float(answer.json()["predictions"][0])
                feedback.append(
                    {"request_id": answer.headers["x-request-id"], "label": predicted + 2.0}
                )
            sent = client.post(f"{server.url}/v1/feedback", json={"records": feedback})
            assert sent.status_code == 200, sent.text
            project.events.flush()
            now = datetime.now(UTC)
            own = metric_value(project, "quality.mae", "m", now - timedelta(hours=1), now)
            assert own == pytest.approx(2.0)

            def exported() -> dict[str, float]:
                text = client.get(f"{server.url}/v1/monitor/metrics").text  # a predictor
                return {
                    s.labels["monitor"]: s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                    if s.name == "conveyor_monitor"
                    and s.labels == {**s.labels, "model": "m", "window": "1h"}
                }

            values = wait_until(
                lambda: exported() or None,
                timeout=10,
                interval=0.5,
                message="the exported MAE (recomputed at most every second)",
            )
            assert values == {"quality.mae": pytest.approx(own)}  # no drift check: no data
            anonymous = httpx.get(f"{server.url}/v1/monitor/metrics", timeout=10)
            assert anonymous.status_code == 401

            # Prometheus scrapes the value with the viewer key and the generated m_mae fires.
            firing = wait_until(
                lambda: [a for a in prom.alerts() if a["state"] == "firing"],
                timeout=20,
                interval=0.25,
                message=lambda: f"m_mae to fire: {prom.query('conveyor_monitor')}",
            )
            (scraped,) = prom.query('conveyor_monitor{job="conveyor-monitors"}')
            assert float(scraped["value"][1]) == pytest.approx(own)
            assert scraped["metric"]["monitor"] == "quality.mae"
            assert [a["labels"]["alertname"] for a in firing] == ["m_mae"]
            # Both jobs up, /metrics with the key too (its first scrape may come later).
            wait_until(
                prom.targets_up,
                timeout=10,
                interval=0.25,
                message=lambda: f"both jobs up: {prom.targets()}",
            )

            # The same server answers the dashboard and the rule file of its spec.
            board = client.get(f"{server.url}/v1/monitor/grafana.json")
            assert board.status_code == 200 and board.json() == dashboard(project.spec)
            rules = client.get(f"{server.url}/v1/monitor/prometheus-rules")
            assert rules.status_code == 200
            assert rules.headers["content-type"].startswith("application/yaml")
            assert yaml.safe_load(rules.text) == rules_document(project.spec)[0]

    # Prometheus' own rule engine on that value fires the generated rule.
    spec = load_spec(root)
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(rules_yaml(spec))
    (alert,) = [
        r
        for g in rules_document(spec)[0]["groups"]
        for r in g.get("rules", ())
        if r.get("alert") == "m_mae"
    ]
    series = 'conveyor_monitor{monitor="quality.mae",model="m",window="1h"}'
    value = values["quality.mae"]
    tests = {
        "rule_files": [str(rule_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": f"{value!r}x10"}],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "m_mae",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "monitor": "quality.mae",
                                    "metric": "quality.mae",
                                    "model": "m",
                                    "window": "1h",
                                    "severity": "ticket",
                                    "source": "spec",
                                },
                                "exp_annotations": {
                                    k: v.replace("{{ $value }}", _go_float(value))
                                    for k, v in alert["annotations"].items()
                                },
                            }
                        ],
                    },
                    {"eval_time": "5m", "alertname": "m_drift", "exp_alerts": []},
                ],
            }
        ],
    }
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [tool("promtool"), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_failing_exported_monitor_is_counted_and_hides_no_other(tmp_path: Path) -> None:
    """Plugin monitors (``register_metric``): one that raises is logged, left out and
    counted in ``conveyor_monitor_failures_total``; one with a value is exported beside it;
    one with no data is left out."""
    from prometheus_client.parser import text_string_to_metric_families

    from conveyor.monitoring.alerts import metrics
    from conveyor.monitoring.interop.exporter import Exporter

    def broken(project: Any, model: Any, since: Any, until: Any) -> float:
        raise RuntimeError("the plugin's store is down")

    def known(project: Any, model: Any, since: Any, until: Any) -> float:
        return 0.25

    rules = """\
monitoring:
  alerts:
    rules:
      - {name: broken, metric: cbpe.h5_broken, model: m, window: 1h, op: ">", threshold: 1}
      - {name: known, metric: cbpe.h5_known, model: m, window: 30m, op: ">", threshold: 1}
      - {name: empty, metric: quality.mae, model: m, window: 1h, op: ">", threshold: 1}
"""
    metrics.register_metric("cbpe.h5_broken", broken)
    metrics.register_metric("cbpe.h5_known", known)
    try:
        with Project.open(_project_root(tmp_path / "p", rules), env={}) as project:
            exporter = Exporter(project)
            exporter.compute()
            text = exporter.compute()  # twice: the failure count adds up
    finally:
        metrics._REGISTERED.pop("cbpe.h5_broken", None)
        metrics._REGISTERED.pop("cbpe.h5_known", None)
    samples = [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    assert (
        "conveyor_monitor",
        {"monitor": "cbpe.h5_known", "model": "m", "window": "30m"},
        0.25,
    ) in samples
    assert [s for s in samples if s[0] == "conveyor_monitor"] == [samples[0]]
    failures = [s for s in samples if s[0] == "conveyor_monitor_failures_total"]
    assert failures == [("conveyor_monitor_failures_total", {"monitor": "cbpe.h5_broken"}, 2.0)]


# -- Alertmanager -------------------------------------------------------------------------------

AM_SPEC = """\
monitoring:
  alerts:
    repeat_interval: 2h
    sinks:
      - name: ops
        kind: webhook
        url: https://hooks.example.com/conveyor
        headers: {X-Token: secret}
      - {name: chat, kind: slack, url: "https://hooks.slack.com/services/T/B/X", severities: [page]}
      - {name: pager, kind: pagerduty, routing_key_env: PD_ROUTING_KEY, severities: [page]}
      - name: mail
        kind: email
        smtp_host: localhost
        sender: conveyor@example.com
        to: [oncall@example.com]
        severities: [ticket]
        password_env: SMTP_PASSWORD
"""


def _routes_to(config: Path, *labels: str) -> str:
    done = subprocess.run(
        [tool("amtool"), "config", "routes", "test", f"--config.file={config}", *labels],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_alertmanager_config_groups_routes_and_inhibits_as_conveyor(tmp_path: Path) -> None:
    """The generated configuration passes ``amtool check-config``; ``amtool config routes
    test`` sends each severity to the sinks that take it; and a real Alertmanager, sent a
    firing availability alert and two latency alerts, inhibits the latency alert of the
    same model only (Conveyor's default inhibition)."""
    from conveyor.cli import app
    from conveyor.monitoring.alerts.rules import alerts_of
    from conveyor.monitoring.interop.alertmanager import alertmanager_config

    root = _project_root(tmp_path / "p", AM_SPEC)
    config = tmp_path / "alertmanager.yml"
    done = CliRunner().invoke(
        app, ["monitor", "alertmanager", "-o", str(config), "--check", "-C", str(root)]
    )
    assert done.exit_code == 0, done.output
    assert "SUCCESS" in done.output
    spec = load_spec(root)
    assert yaml.safe_load(config.read_text()) == alertmanager_config(spec)[0]
    text = config.read_text()
    assert "sink 'pager' (pagerduty)" in text and "$SMTP_PASSWORD" in text
    assert "sink 'ops' (webhook): its headers are not carried over" in text

    document = yaml.safe_load(text)
    assert document["route"]["group_by"] == ["alertname", "model"]
    assert document["route"]["repeat_interval"] == "2h"
    assert _routes_to(config, "severity=page", "model=m") == "ops,chat"
    assert _routes_to(config, "severity=ticket", "model=m") == "ops,mail"
    assert _routes_to(config, "severity=info") == "ops"
    (inhibit,) = alerts_of(spec).inhibit
    assert document["inhibit_rules"] == [
        {
            "source_matchers": [f'metric=~"{"|".join(inhibit.source)}"'],
            "target_matchers": [f'metric=~"{"|".join(inhibit.target)}"'],
            "equal": ["model"],
        }
    ]

    # A real Alertmanager with this configuration (its receivers never reached: the test
    # reads its alert list, inhibited or not, right away).
    port = worker_port()
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            tool("prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api/v2"
    try:

        def ready() -> bool:
            assert process.poll() is None, _tail(tmp_path / "alertmanager.log")
            try:
                return httpx.get(f"{url}/status", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, interval=0.1, message="alertmanager to be ready")

        def alert(name: str, metric: str, model: str) -> dict[str, Any]:
            labels = {"alertname": name, "metric": metric, "model": model, "severity": "page"}
            return {"labels": labels}

        sent = httpx.post(
            f"{url}/alerts",
            json=[
                alert("slo_availability:m", "availability", "m"),
                alert("slo_latency_p95_ms:m", "latency_p95_ms", "m"),
                alert("slo_latency_p95_ms:n", "latency_p95_ms", "n"),
            ],
            timeout=5,
        )
        assert sent.status_code == 200, sent.text

        def states() -> dict[str, list[str]] | None:
            listed = httpx.get(f"{url}/alerts", timeout=5).json()
            found = {a["labels"]["alertname"]: a["status"]["inhibitedBy"] for a in listed}
            return found if len(found) == 3 and found["slo_latency_p95_ms:m"] else None

        inhibited = wait_until(states, timeout=10, interval=0.2, message="the inhibition")
        assert inhibited["slo_availability:m"] == []
        assert inhibited["slo_latency_p95_ms:n"] == []  # another model: not inhibited
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_recording_rules_compute_the_monitors_as_conveyor_defines_them(tmp_path: Path) -> None:
    """Prometheus' rule engine (``promtool test rules``) on counters whose rates are known:
    each recording rule gives the monitor's value as Conveyor's system monitor defines it
    (error rate: 4xx and 5xx over every request; availability: 1 minus the 5xx share;
    shares of zero, not "no data", for a model with no errors); a server that stops
    answering scrapes raises conveyor_target_down after slo_for."""
    spec = load_spec(_project_root(tmp_path / "p", "monitoring: {interop: {windows: [5m]}}\n"))
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(rules_yaml(spec, rules=[]))
    m = 'model="m",version="1",arm="v1"'
    per_minute = {  # series -> increase per minute (gauges: their value)
        f'conveyor_requests_total{{{m},status="ok"}}': 90,
        f'conveyor_requests_total{{{m},status="404"}}': 6,
        f'conveyor_requests_total{{{m},status="503"}}': 4,
        f"conveyor_shed_requests_total{{{m}}}": 3,
        'conveyor_requests_total{model="n",version="2",arm="v2",status="ok"}': 60,
        f'conveyor_request_seconds_bucket{{{m},le="0.005"}}': 45,
        f'conveyor_request_seconds_bucket{{{m},le="0.01"}}': 90,
        f'conveyor_request_seconds_bucket{{{m},le="+Inf"}}': 90,
        'conveyor_cache_lookups_total{model="m",version="1",result="hit"}': 30,
        'conveyor_cache_lookups_total{model="m",version="1",result="miss"}': 90,
        'conveyor_batch_rows_sum{model="m",version="1"}': 120,
        'conveyor_batch_rows_count{model="m",version="1"}': 60,
        'conveyor_process_cpu_seconds_total{instance="web-1",pid="11"}': 30,
        'conveyor_process_cpu_seconds_total{instance="web-1",pid="12"}': 15,
    }
    gauges = {
        'conveyor_process_resident_memory_bytes{instance="web-1",pid="11"}': 100 * 2**20,
        'conveyor_process_resident_memory_bytes{instance="web-1",pid="12"}': 50 * 2**20,
        'conveyor_queue_rows{model="m",version="1"}': 3,
        'conveyor_route_degraded{model="m"}': 1,
    }
    expected = {  # (monitor, model or None for the instance ones) -> value
        ("requests_per_s", "m"): 100 / 60,
        ("requests_per_s", "n"): 1.0,
        ("error_rate", "m"): 0.1,
        ("error_rate", "n"): 0.0,
        ("server_error_rate", "m"): 0.04,
        ("server_error_rate", "n"): 0.0,
        ("availability", "m"): 0.96,
        ("availability", "n"): 1.0,
        ("shed_rate", "m"): 0.03,
        ("shed_rate", "n"): 0.0,
        ("cache_hit_ratio", "m"): 0.25,
        ("mean_batch_rows", "m"): 2.0,
        ("queue_depth", "m"): 3.0,
        ("route_degraded", "m"): 1.0,
        ("latency_p50_ms", "m"): 5.0,  # half the requests at or under 5 ms
        ("latency_p95_ms", "m"): 9.5,  # interpolated within the (5, 10] ms bucket
        ("latency_p99_ms", "m"): 9.9,
        ("cpu_percent", None): 75.0,  # two processes: 50% and 25% of a core
        ("rss_mib", None): 150.0,
    }
    assert {name for name, _ in expected} == set(MONITORS)  # every monitor, checked
    tests = {
        "rule_files": [str(rule_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    *({"series": s, "values": f"0+{v}x20"} for s, v in per_minute.items()),
                    *({"series": s, "values": f"{v}x20"} for s, v in gauges.items()),
                ],
                "promql_expr_test": [
                    {
                        # The quantiles interpolate: 9.499999999999998 is 9.5 (to 0.1 ms).
                        "expr": (
                            f"round(conveyor:{name}:5m, 0.1)"
                            if name.startswith("latency")
                            else f"conveyor:{name}:5m"
                        ),
                        "eval_time": "10m",
                        "exp_samples": [
                            {
                                "labels": (
                                    ("{" if name.startswith("latency") else f"conveyor:{name}:5m{{")
                                    + (f'model="{model}"}}' if model else 'instance="web-1"}')
                                ),
                                "value": value,
                            }
                            for (n, model), value in expected.items()
                            if n == name
                        ],
                    }
                    for name in dict.fromkeys(n for n, _ in expected)
                ],
            }
        ],
    }
    # A server Prometheus stopped reaching at minute 5: down after slo_for (5m by default).
    target = 'up{job="conveyor",instance="web-1:8000"}'
    tests["tests"][0]["input_series"].append({"series": target, "values": "1x4 0x15"})
    tests["tests"][0]["alert_rule_test"] = [
        {"eval_time": "8m", "alertname": "conveyor_target_down", "exp_alerts": []},  # pending
        {
            "eval_time": "11m",
            "alertname": "conveyor_target_down",
            "exp_alerts": [
                {
                    "exp_labels": {
                        "job": "conveyor",
                        "instance": "web-1:8000",
                        "severity": "page",
                        "metric": "availability",
                        "source": "prometheus",
                    },
                    "exp_annotations": {
                        "summary": "web-1:8000: Prometheus cannot scrape the Conveyor server",
                        "description": "up is 0 for web-1:8000 (job conveyor): the server is "
                        "down or unreachable, and its own alert evaluation with it.",
                    },
                }
            ],
        },
    ]
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [tool("promtool"), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _go_float(value: float) -> str:
    """``value`` as Prometheus' templates print ``$value`` (Go's shortest form: 2, not
    2.0)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
