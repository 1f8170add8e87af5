"""The quickstart's monitoring step: live traffic drifts, labels arrive late, an alert acts.

What happens, all on the real server, the real event log and the Parquet copy of it:

1. the champion answers calm traffic, then traffic whose amounts have tripled and
   whose foreign share has jumped (covariate drift). The server keeps every request's
   inputs (``serving.payload_sample_rate: 1.0`` here; a few percent in production);
   a bad request (a 422) shows in the error rate;
2. the system monitors (requests, latency percentiles, error rate) come from the
   compacted log: ``MonitorQuery.system``, ``conveyor monitor``;
3. a drift job compares each phase's inputs with the champion's training data
   (``live_drift``, ``conveyor monitor drift``): calm passes, drifted fails and writes
   ``drift.detected``;
4. the alert rule on ``drift.share`` is evaluated three times: it fires once, one
   notification reaches the on-call webhook (a local receiver here) however often it
   is evaluated, and its ``retrain`` action writes ``alert.retrain_requested``, which
   the model's ``retrain.on_events`` turns into a retraining on the next scheduler tick;
5. labels arrive late (``POST /v1/feedback``, by request id): model quality per phase
   shows the drop the drift caused, and CBPE's label-free estimate of accuracy, made
   before any label arrived, sits beside the realized accuracy.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from traffic import post_many

import conveyor
from conveyor.governance.keys import ApiKeys
from conveyor.monitoring import MonitorQuery, compact, live_drift, quality_report
from conveyor.monitoring.alerts.evaluator import Evaluator
from conveyor.pipelines import LocalRunner, Scheduler
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.training.continuous import retraining_schedules

#: Appended to conveyor.yaml by the quickstart (the webhook's URL comes from the
#: environment: a real one is a secret).
MONITORING_SPEC = """
# Step 10, monitoring. The server keeps every request's inputs for drift jobs
# (production: a sample, e.g. 0.05); an alert on live input drift retrains the
# model (models.fraud-detector.retrain.on_events) and notifies the on-call webhook.
serving:
  payload_sample_rate: 1.0
monitoring:
  quality:
    models:
      fraud-detector: {task: binary, metrics: [accuracy, precision, recall]}
  alerts:
    rules:
      - name: fraud_input_drift
        metric: drift.share           # share of input columns that drifted
        model: fraud-detector
        window: 1h
        op: ">"
        threshold: 0.25
        for: 0s
        severity: ticket
        actions: [{kind: retrain}]
    sinks:
      - {name: oncall, kind: webhook, url_env: QUICKSTART_ALERT_HOOK}
"""

HOOK_ENV = "QUICKSTART_ALERT_HOOK"


class _Receiver(BaseHTTPRequestHandler):
    """The on-call channel: keeps every JSON body posted to it."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _drifted(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Amounts tripled, half the transactions abroad: the world the model now sees."""
    rng = np.random.default_rng(seed)
    out = rows.copy()
    out["log_amount"] = np.log1p(np.expm1(out["log_amount"]) * 3.0)
    out["log_amount_vs_usual"] = out["log_amount_vs_usual"] + np.log(3.0)
    out["is_foreign"] = (rng.random(len(out)) < 0.5).astype("float64")
    return out


def _labels(raw: pd.DataFrame, rows: pd.DataFrame) -> Any:
    """The true outcomes of ``rows`` (known days later in real life)."""
    return raw.loc[rows.index, "is_fraud"].to_numpy().astype(int)


def _send(
    client: httpx.Client, model: str, rows: pd.DataFrame, key: str
) -> tuple[list[str], list[Any]]:
    """Each row as a request (several in flight); request ids and answers in row order."""
    bodies = [{"records": [record]} for record in rows.to_dict("records")]
    answers = post_many(client, f"/v1/models/{model}/predict", bodies, {"x-api-key": key})
    return [a.headers["x-request-id"] for a in answers], [a.json() for a in answers]


def run_monitoring(
    project: conveyor.Project,
    console: Console,
    raw: pd.DataFrame,
    features: list[str],
    *,
    model: str,
    step: str,
    rows: int = 600,
) -> dict[str, Any]:
    """Steps 1-5 of the module; returns what the quickstart's summary and tests read."""
    from model import add_features

    keys = ApiKeys(project.store, project.events)
    predictor, _ = keys.create("quickstart-monitoring", "predictor", actor="quickstart")
    # Two random samples of the transactions the champion was trained on: one sent as
    # it is (calm), one as the world has changed (drifted).
    picked = add_features(raw).sample(2 * rows, random_state=7)
    calm_rows, drifted_rows = picked.head(rows), picked.tail(rows)
    calm = calm_rows[features].astype({"merchant_category": str})
    drifted = _drifted(drifted_rows[features].astype({"merchant_category": str}), seed=7)

    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    os.environ[HOOK_ENV] = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    summary: dict[str, Any] = {}
    try:
        # A scheduler of the model's retraining, as `conveyor pipeline schedule` runs it:
        # its first tick marks where the event triggers start reading.
        runner = LocalRunner.for_project(project)
        scheduler = Scheduler(
            runner, [p for p in retraining_schedules(project) if p.name == f"retrain.{model}"]
        )
        scheduler.tick()

        # 1. Live traffic through the real server.
        started = datetime.now(UTC)
        with (
            ThreadedServer(create_app(project)) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            calm_ids, _ = _send(client, model, calm, predictor)
            middle = datetime.now(UTC)
            drifted_ids, _ = _send(client, model, drifted, predictor)
            bad = client.post(
                f"/v1/models/{model}/predict",
                json={"records": [{"log_amount": "a lot"}]},
                headers={"x-api-key": predictor},
            )
            ended = datetime.now(UTC)
            # 5 (the labels, days later in real life): by request id, over HTTP.
            labels = {
                "calm": _labels(raw, calm_rows),
                "drifted": _labels(raw, drifted_rows),
            }
        console.print(
            f"[green]{step}[/] monitoring: {len(calm_ids)} calm requests, then "
            f"{len(drifted_ids)} with amounts x3 and half of them abroad, and one bad "
            f"request ({bad.status_code} {bad.json().get('code') or bad.json()})"
        )

        # 2. System monitors from the Parquet copy of the log.
        copied = compact(project, actor="quickstart")
        monitor = MonitorQuery(project)
        system = monitor.system(
            model, since=started - timedelta(seconds=1), until=ended, window=timedelta(hours=1)
        )
        console.print(system_table(system.windows, copied.events))
        summary["system"] = system.windows

        # 3. Drift jobs: each phase against the champion's training data.
        calm_drift = live_drift(project, model, since=started, until=middle, actor="quickstart")
        live = live_drift(project, model, since=middle, until=ended, actor="quickstart")
        for name, found in (("calm", calm_drift), ("drifted", live)):
            verdict = "[red]drift detected[/]" if found.detected else "[green]no drift[/]"
            which = f" ({', '.join(found.drifted)})" if found.drifted else ""
            estimate = f"; CBPE accuracy estimate {found.cbpe.accuracy:.3f}" if found.cbpe else ""
            console.print(
                f"    drift job, {name} traffic against the training data: {verdict}, "
                f"{found.share:.0%} of {len(found.inputs.columns)} inputs drifted{which}"
                f"{estimate}",
                soft_wrap=True,
            )
        summary["drift"] = {"calm": calm_drift.detected, "drifted": live.detected}

        # 4. The alert: evaluated three times, notified once, acts once.
        fired: list[str] = []
        with Evaluator(project) as alerts:
            now = datetime.now(UTC)
            for minute in range(3):
                result = alerts.evaluate(now + timedelta(minutes=minute))
                fired += [i.rule for i in result.fired]
            alerts.dispatcher.drain()
        notified = [n for n in _Receiver.received if n]
        times = fired.count("fraud_input_drift")
        console.print(
            f"    alert fraud_input_drift: evaluated 3 times, fired {times} time(s), "
            f"{len(notified)} notification(s) at the on-call webhook; its action wrote "
            "alert.retrain_requested",
            soft_wrap=True,
        )
        summary["alerts"] = {"fired": fired, "notifications": len(notified)}
        runs = scheduler.tick()
        retrained = [r for r in runs if r.pipeline == f"retrain.{model}"]
        if retrained:
            run = runner.wait(retrained[0].id) if hasattr(runner, "wait") else retrained[0]
            console.print(
                f"    the scheduler's next tick started retrain.{model} ({run.status}), "
                "triggered by the alert"
            )
        summary["retrained"] = len(retrained)

        # 5. Late labels, then quality per phase and CBPE beside the realized accuracy.
        feedback = [
            {"request_id": rid, "label": int(y)}
            for phase, ids in (("calm", calm_ids), ("drifted", drifted_ids))
            for rid, y in zip(ids, labels[phase], strict=True)
        ]
        with (
            ThreadedServer(create_app(project)) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            client.post(
                "/v1/feedback", json={"records": feedback}, headers={"x-api-key": predictor}
            ).raise_for_status()
        compact(project, actor="quickstart")
        quality = {
            name: quality_report(project, model, since=a, until=b, window=timedelta(days=1))
            for name, (a, b) in (("calm", (started, middle)), ("drifted", (middle, ended)))
        }
        after = live_drift(
            project, model, since=middle, until=ended, actor="quickstart", record=False
        )
        console.print(quality_table(quality, live, after))
        summary["quality"] = {k: v.windows for k, v in quality.items()}
        summary["cbpe"] = after.cbpe_realized
    finally:
        hook.shutdown()
        os.environ.pop(HOOK_ENV, None)
    return summary


def system_table(windows: list[dict[str, Any]], copied: int) -> Table:
    table = Table(
        title=f"system monitors (from the log's Parquet copy, {copied:,} events compacted)",
        title_justify="left",
    )
    for column in ("version", "arm", "requests", "p50 ms", "p95 ms", "p99 ms", "error rate"):
        table.add_column(column, justify="left" if column in ("version", "arm") else "right")
    for w in windows:
        table.add_row(
            str(w["version"]),
            str(w["arm"]),
            str(w["requests"]),
            f"{w['p50_ms']:.2f}" if w["p50_ms"] is not None else "-",
            f"{w['p95_ms']:.2f}" if w["p95_ms"] is not None else "-",
            f"{w['p99_ms']:.2f}" if w["p99_ms"] is not None else "-",
            f"{w['error_rate']:.2%}" if w.get("error_rate") is not None else "-",
        )
    return table


def quality_table(quality: dict[str, Any], before: Any, after: Any) -> Table:
    """Quality per phase from the labels, beside CBPE's estimate made before any label."""
    table = Table(title="model quality from late labels (POST /v1/feedback)", title_justify="left")
    for column in ("traffic", "labelled", "accuracy", "precision", "recall", "CBPE accuracy"):
        table.add_column(column, justify="left" if column == "traffic" else "right")
    for name, report in quality.items():
        for w in report.windows:
            estimate = before.cbpe.accuracy if name == "drifted" and before.cbpe else None
            table.add_row(
                name,
                str(w.get("labelled", 0)),
                *(
                    f"{w[m]:.3f}" if w.get(m) is not None else "-"
                    for m in ("accuracy", "precision", "recall")
                ),
                f"{estimate:.3f} (no labels)" if estimate is not None else "-",
            )
    if after.cbpe_realized is not None:
        realized = after.cbpe_realized
        table.caption = (
            f"CBPE estimated accuracy {realized['estimate']['accuracy']:.3f} on the drifted "
            f"traffic from the model's calibrated confidence alone; the labels, once they "
            f"came, say {realized['accuracy']:.3f} (error {realized['accuracy_error']:+.3f})"
        )
    return table
