"""Conveyor quickstart: from raw transactions to a gated champion and its INT8 twin.

    python examples/quickstart/quickstart.py --project .demo --fresh

Steps, each written to the event log:
  1. create a project (conveyor.yaml + .conveyor/) on embedded defaults, with a
     data set (expectations, sensitive columns, subject key) and a model
     (entry points, hold-out, gates) in the spec; model.py and data.py are
     copied beside it, so ``conveyor train fraud-detector`` works from the CLI;
  2. generate card transactions with a fixed seed (the world shifts half-way),
     damage a few rows as upstream systems do, and ingest two periods through
     the data layer: bad rows land in quarantine with their reasons, good rows
     become dataset versions (emails encrypted at rest);
  3. compare the two periods with a drift report;
  4. train fraud-detector@1 through the gated flow (hold-out by time, gates
     from the spec) and promote it to champion: its gates passed;
  5. train a deliberately weak challenger, @2: it fails its gates, and the
     registry refuses to make it champion;
  6. train a better challenger, @3: it passes, beats the champion, is promoted;
  7. export the champion to ONNX, quantize it to INT8, and register the result
     as @4, linked to its parent, with a size / latency / AUC report;
  8. serve the champion with a canary and a shadow copy, then roll back;
  9. the feature store: customer spend and counts over 1h/24h/7d defined once in
     ``features:``, a second model trained on them point-in-time, materialized
     online, and served from ``{"customer_id": ..., "amount": ...}``;
  10. monitoring: drifting traffic caught by a drift job and its alert;
  11. show who moved ``champion``, when and why; forget one customer (GDPR);
  12. progressive delivery: a rollout rolled back, another promoted, an A-A test;
  13. batch scoring into Parquet partitions, broken rows kept with their reason;
  14. stream scoring on NATS JetStream (skipped without a NATS server);
  15. RAG: the repository's docs as a versioned collection (``rag:`` in the spec),
      gated on 18 labelled questions, searched with citations, packed for a prompt;
  16. the LLM gateway: the openai client through Conveyor's OpenAI-compatible API to an
      upstream that fails now and then and a local transformers model: a fallback taken,
      a stream cancelled and charged for what was generated, feedback scored;
  17. agents over MCP: the MCP gateway in front of two example tool servers, a scripted
      agent with the official mcp client: a retry, a timeout, a leaked key blocked, a
      Markdown table, a conversation's budget of tool calls tripping;
  18. deployment: the champion promoted from dev into staging's own registry, served there
      and smoke-tested against golden requests from its hold-out; the image recipe, the
      Helm chart rendered for staging and validated, a GitHub Actions pipeline.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from delivery_demo import DELIVERY_SPEC, run_delivery
from deploy_demo import DEPLOY_SPEC, run_deploy
from features_demo import FEATURES_SPEC, run_features
from features_demo import MODEL_SPEC as RISK_MODEL_SPEC
from gateway_demo import GATEWAY_SPEC, run_gateway
from mcp_demo import run_mcp
from model import FEATURES, LABEL, add_features
from monitor_demo import MONITORING_SPEC, run_monitoring
from rag_demo import rag_spec, run_rag
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from scoring_demo import run_scoring, run_stream
from serve_demo import serve_and_route

import conveyor
from conveyor.checks.persist import save_report
from conveyor.checks.render import report_table
from conveyor.checks.result import CheckResult, Report
from conveyor.data.crypto import generate_key
from conveyor.data.drift import DriftDetector
from conveyor.data.events import DATA_DRIFT
from conveyor.errors import GateFailedError, NotFoundError
from conveyor.registry.versions import ModelVersion
from conveyor.training.flow import Candidate, train_candidate
from conveyor.training.optimize.onnx_model import export_onnx
from conveyor.training.optimize.versions import Optimized, optimize_version
from data import CATEGORIES, generate_transactions, inject_bad_rows

SEED = 7
MODEL_NAME = "fraud-detector"
HERE = Path(__file__).resolve().parent
# The three candidates differ only in how long the network trains (epochs);
# everything else comes from `params` in the spec below.
FIRST: dict[str, Any] = {"epochs": 4}
WEAK: dict[str, Any] = {"epochs": 1}
BETTER: dict[str, Any] = {}

# Piped output (make demo in CI) gets 110 columns rather than rich's 80.
console = Console(width=None if Console().is_terminal else 110)


class _QuietQuantizer(logging.Filter):
    """ONNX Runtime's quantizer logs advice meant for image models to the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


DATASETS_SPEC = """
# The data set the quickstart ingests: every batch is checked against these
# expectations; failing rows go to quarantine with their reasons. `mostly`
# tolerates a few bad rows per batch (they are still quarantined): more than
# 1%% and the check fails, and so does the data_checks gate of any model
# trained on that version.
datasets:
  transactions:
    description: Card transactions, one row per authorisation.
    expectations:
      - {kind: schema, columns: {transaction_id: int64, amount: double, customer_id: int64}}
      - {kind: not_null, column: amount, mostly: 0.99}
      - {kind: between, column: amount, min: 0, max: 50000, mostly: 0.99}
      - {kind: in_set, column: merchant_category, values: [%s], mostly: 0.99}
      - {kind: unique, column: transaction_id}
      - {kind: row_count, min: 1000}
    on_failure: quarantine
    sensitive: [customer_email]     # encrypted at rest, masked in displays
    subject_keys: [customer_id]     # `conveyor data forget --key customer_id=...`
encryption:
  key_file: .conveyor/data.key      # demo only: keep real keys in a secret store
"""

MODELS_SPEC = """
# The model `conveyor train fraud-detector` trains: entry points in model.py
# (beside this file), the latest version of `transactions`, a hold-out of the
# most recent 20%% of rows, and the gates every candidate must pass before it
# may become champion.
models:
  fraud-detector:
    train: model:fit                  # fit(X, y, *, seed, **params) -> fitted model
    prepare: model:add_features       # dataset rows -> the features below
    dataset: transactions
    features: [%s]
    target: %s
    holdout: {by: time, column: timestamp, fraction: 0.2}   # no look-ahead
    params: {hidden_layers: [64, 32], epochs: 12, alpha: 0.01, batch_size: 500}
    gates:
      - metric_floor: {}              # holdout roc_auc >= slos.quality.floor
      - champion_comparison: {metric: roc_auc, min_absolute_change: 0.002, no_champion: warn}
      - latency_budget: {p95_ms: 250}  # p95 of one-row predictions (loose: a shared demo machine)
      - data_checks: {}               # the training data's validation report
    auto_promote: false               # champion moves by `conveyor models promote`
    retrain: {on_events: [alert.retrain_requested]}   # step 10: an alert's retrain action
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path(".demo"), help="project folder")
    parser.add_argument("--fresh", action="store_true", help="delete the folder first")
    parser.add_argument("--rows", type=int, default=60_000, help="transactions to generate")
    args = parser.parse_args(argv)

    if args.fresh and args.project.exists():
        shutil.rmtree(args.project)
    if not (args.project / "conveyor.yaml").exists():
        set_up_project(args.project)
    logging.getLogger().addFilter(_QuietQuantizer())
    started = time.perf_counter()
    with conveyor.Project.open(args.project) as project:
        summary = run_quickstart(project, rows=args.rows)
    print_summary(project, summary, time.perf_counter() - started)
    return 0


def set_up_project(root: Path) -> None:
    """conveyor init, plus the data set and model specs and the model's code beside them."""
    conveyor.init_project(root, name="fraud-detection")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(DATASETS_SPEC % ", ".join(CATEGORIES))
        spec.write(MODELS_SPEC % (", ".join(FEATURES), LABEL))
        spec.write(RISK_MODEL_SPEC)
        spec.write(FEATURES_SPEC)
        spec.write(MONITORING_SPEC)
        spec.write(DELIVERY_SPEC)
        spec.write(rag_spec())
        spec.write(GATEWAY_SPEC)
        spec.write(DEPLOY_SPEC)
    # `conveyor train` imports the code from the project; the RAG gate reads its questions
    for name in ("model.py", "data.py", "docs_eval.jsonl"):
        shutil.copy(HERE / name, root / name)
    (root / ".conveyor" / "data.key").write_text(generate_key())


def ingest_periods(project: conveyor.Project, raw: pd.DataFrame) -> dict[str, Any]:
    """Two periods through validation and quarantine; drift between them."""
    data = project.data
    cutoff = raw["timestamp"].min() + pd.Timedelta(days=45)
    periods = [raw[raw["timestamp"] < cutoff], raw[raw["timestamp"] >= cutoff]]
    results = []
    for number, period in enumerate(periods, start=1):
        batch = inject_bad_rows(period, seed=SEED + number)
        result = data.ingest(
            "transactions",
            batch,
            actor="quickstart",
            source_description={"kind": "generator", "period": number},
        )
        results.append(result)
        console.print(
            f"[green]2.{number}[/] period {number}: {result.rows_in:,} rows -> "
            f"{result.rows_accepted:,} in {result.version.ref if result.version else '-'}, "
            f"[yellow]{result.rows_quarantined} quarantined[/] "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(result.quarantine.reasons.items()))})"
            if result.quarantine
            else ""
        )
    first, latest = results[0].version, results[-1].version
    assert first is not None and latest is not None, "both periods become versions"
    reference = data.versions.read(first, actor="quickstart", purpose="drift")
    current = data.versions.read(latest, actor="quickstart", purpose="drift")
    current = current.filter(pc.greater_equal(current["timestamp"], pa.scalar(cutoff)))
    columns = ["amount", "merchant_category", "is_foreign", "card_present", "merchant_id"]
    drift = DriftDetector(columns=columns).fit(reference).score(current)
    drift_report = drift.to_report("dataset:transactions")
    drift_report.subject_version = "period 1 -> period 2"
    save_report(project.store, drift_report)
    project.events.record(
        DATA_DRIFT,
        subject="transactions",
        subject_version=str(latest.number),
        payload={
            "reference": first.id,
            "current": latest.id,
            "report_id": drift_report.id,
            "verdict": drift_report.verdict,
        },
    )
    drifted = [c.name for c in drift_report.checks if not c.passed]
    console.print(
        f"[green]3[/] drift period 1 -> 2: {len(drifted)} findings ({', '.join(drifted) or 'none'})"
    )
    return {"ingests": results, "latest": latest, "drift": drift_report}


def run_quickstart(project: conveyor.Project, *, rows: int) -> dict[str, Any]:
    registry = project.registry
    with console.status("Generating transactions..."):
        raw = generate_transactions(rows, seed=SEED)
    console.print(
        f"[green]1[/] generated {len(raw):,} transactions, fraud rate {raw['is_fraud'].mean():.2%}"
    )
    with console.status("Ingesting..."):
        data = ingest_periods(project, raw)

    # 4. A first model. Its gates pass, so the registry lets it become champion.
    with console.status(f"Training {MODEL_NAME} (4 epochs)..."):
        first = train_candidate(project, MODEL_NAME, params=FIRST, seed=SEED, actor="ana")
    show_candidate("4", first, "a first model, 4 epochs")
    promote(project, first, reason="first model; its gates passed")

    # 5. A careless challenger: one epoch. Its gates fail; promotion is refused.
    with console.status(f"Training {MODEL_NAME} (1 epoch)..."):
        weak = train_candidate(project, MODEL_NAME, params=WEAK, seed=SEED, actor="bo")
    show_candidate("5", weak, "a weak challenger, 1 epoch")
    console.print(checks_table(weak.report, failed_only=True))
    try:
        registry.promote(MODEL_NAME, weak.version, actor="bo", reason="looks fine to me")
    except GateFailedError as refused:
        console.print(f"    [red]promotion refused[/] ({refused.code}): {refused}")
    else:
        raise RuntimeError(f"{weak.version.ref} failed its gates yet was promoted")

    # 6. A better challenger: the spec's 12 epochs. It passes and beats the champion.
    with console.status(f"Training {MODEL_NAME} (12 epochs)..."):
        better = train_candidate(project, MODEL_NAME, params=BETTER, seed=SEED, actor="ana")
    show_candidate("6", better, "a better challenger, 12 epochs")
    promote(
        project,
        better,
        reason=f"beats {first.version.ref} on hold-out ROC AUC; gates {better.report.verdict}",
    )

    # 7. The champion as ONNX with INT8 weights: a new version, linked to its parent.
    optimized = None
    if champion_of(project) is not None:
        with console.status("Exporting to ONNX and quantizing..."):
            optimized = optimize_version(project, f"{MODEL_NAME}@champion", actor="ana")
            # The same export without quantization, to tell what INT8 alone saves.
            champion_model = registry.load(optimized.parent).model
            float_onnx = export_onnx(champion_model, add_features(raw.head(100))[FEATURES])
        show_optimized("7", optimized, float_onnx.size_bytes)

    # 8. Serve the champion, a 10% canary of the INT8 copy with a shadow copy
    #    to the first champion, then roll back.
    serving = None
    champion = champion_of(project)
    if champion is not None and optimized is not None:
        rows = add_features(raw).tail(1400)[FEATURES]
        records = rows.astype({"merchant_category": str}).to_dict("records")
        serving = serve_and_route(
            project,
            console,
            MODEL_NAME,
            records,
            champion=champion.number,
            canary=optimized.version.number,
            shadow=first.version.number,
            step="8",
        )

    # 9. The feature store: customer features defined once, trained on point-in-time,
    #    materialized online, and the server predicting from a customer id.
    with console.status("Feature store: apply, train customer-risk, materialize, serve..."):
        features = run_features(project, console, raw, step="9")

    # 10. Monitoring: live traffic drifts, a drift job and its alert catch it (once),
    #     the alert retrains the model; late labels show the quality drop beside CBPE.
    monitoring = None
    if champion is not None:
        with console.status("Monitoring: traffic, drift jobs, alerts, late labels..."):
            monitoring = run_monitoring(
                project, console, raw, FEATURES, model=MODEL_NAME, step="10"
            )

    # 11. Who moved champion, when and why; then a customer asks to be forgotten.
    console.print(history_table(project))
    customer = int(raw["customer_id"].iloc[0])
    forgotten = project.data.forget("customer_id", customer, actor="quickstart")
    console.print(
        f"[green]11[/] forgot customer {customer}: {forgotten.rows_removed} rows in "
        f"{forgotten.versions_rewritten} versions, {forgotten.quarantine_rows_removed} in "
        f"quarantine, {forgotten.events_erased} events"
    )

    # 12. Progressive delivery: a buggy hotfix rolled back by the controller at its first
    #     step, the alert's retrained candidate promoted step by step, an A-A experiment.
    delivery = None
    if champion is not None:
        with console.status("Progressive delivery: rollouts, an A-A experiment..."):
            delivery = run_delivery(project, console, raw, FEATURES, model=MODEL_NAME, step="12")

    # 13. Scale-out: the champion scores a batch of exported transactions into Parquet
    #     partitions (broken rows kept apart with their reason), and a re-run doubles
    #     nothing.
    scoring = None
    if champion_of(project) is not None:
        with console.status("Batch scoring..."):
            scoring = run_scoring(project, console, raw, FEATURES, model=MODEL_NAME, step="13")

    # 14. Stream scoring: transactions on NATS JetStream scored as they arrive through the
    #     champion's route; poison messages dead-lettered (skipped without a NATS server).
    stream = None
    if champion_of(project) is not None:
        with console.status("Stream scoring..."):
            stream = run_stream(project, console, raw, FEATURES, model=MODEL_NAME, step="14")

    # 15. RAG: the repository's docs as a versioned collection, gated on 18 labelled
    #     questions, searched with citations, packed for a prompt, rebuilt incrementally.
    with console.status("RAG: building a collection of Conveyor's docs..."):
        rag = run_rag(project, console, step="15")

    # 16. The LLM gateway: the openai client through Conveyor's OpenAI-compatible API to a
    #     flaky upstream and a local transformers model (fallback, cancelled stream).
    with console.status("LLM gateway: an upstream, a local model, the openai client..."):
        gateway = run_gateway(project.root, console, step="16")

    # 17. Agents over MCP: the gateway in front of two example tool servers, an agent loop.
    with console.status("MCP gateway: two tool servers, an agent with the mcp client..."):
        agents = run_mcp(project.root, console, step="17")
    # 18. Deployment: dev -> staging (promoted, served, smoke-tested), the image recipe, the
    # Helm chart rendered and validated, a CI/CD pipeline.
    with console.status("Deployment: promote to staging, smoke, image, chart, CI..."):
        deployment = run_deploy(project.root, console, step="18", model=MODEL_NAME)
    return {
        "data": data,
        "candidates": [first, weak, better],
        "optimized": optimized,
        "serving": serving,
        "features": features,
        "monitoring": monitoring,
        "delivery": delivery,
        "scoring": scoring,
        "stream": stream,
        "rag": rag,
        "gateway": gateway,
        "agents": agents,
        "deployment": deployment,
        "champion": champion_of(project),
    }


def champion_of(project: conveyor.Project) -> ModelVersion | None:
    try:
        return project.registry.get(MODEL_NAME, "champion")
    except NotFoundError:
        return None


def promote(project: conveyor.Project, candidate: Candidate, *, reason: str) -> bool:
    """Make ``candidate`` champion through its gates; show why when they refuse it.

    The candidates promoted here pass on a quiet machine; on a very busy one the
    latency gate (p95 of one-row predictions) can fail, and the demo says so.
    """
    try:
        project.registry.promote(MODEL_NAME, candidate.version, actor="ana", reason=reason)
    except GateFailedError as refused:
        console.print(checks_table(candidate.report, failed_only=True))
        console.print(f"    [red]promotion refused[/] ({refused.code}): {refused}")
        return False
    console.print(f"    [green]promoted[/] {candidate.version.ref} to champion")
    return True


# -- printing ----------------------------------------------------------------------------


def _auc(candidate: Candidate) -> float:
    return candidate.version.metrics["holdout_roc_auc"]


def show_candidate(step: str, candidate: Candidate, what: str) -> None:
    report = candidate.report
    style = "red" if not report.passed else "yellow" if report.warnings else "green"
    rows = int(candidate.version.metrics["train_rows"])
    held = int(candidate.version.metrics["holdout_rows"])
    console.print(
        f"[green]{step}[/] {candidate.version.ref} ({what}, {rows:,} training rows): "
        f"ROC AUC {_auc(candidate):.4f} on {held:,} hold-out rows; gates "
        f"[{style}]{report.verdict}[/] ({len(report)} checks"
        + (f", {len(report.failures)} failed" if report.failures else "")
        + ")"
        + (", now challenger" if candidate.challenger else ", no alias moved")
    )
    for check in report.warnings:
        console.print(f"    [yellow]warning[/] {check.name}: {check.detail}")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):  # one level: nested details are in the report itself
        return ", ".join(
            f"{k} {_fmt(v)}" for k, v in value.items() if v is not None and not isinstance(v, dict)
        )
    return "-" if value is None else str(value)


def checks_table(report: Report, *, failed_only: bool = False) -> Table:
    """Each check: what was observed, what the gate asked for, and why."""
    checks: list[CheckResult] = report.failures if failed_only else list(report.checks)
    title = f"{report.subject}@{report.subject_version}: {report.verdict.upper()}"
    table = Table(
        title=f"    why {title}" if failed_only else f"gate report {title}",
        title_justify="left",
    )
    table.add_column("status")
    table.add_column("check")
    table.add_column("observed", justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("detail", overflow="fold")
    styles = {"pass": "green", "fail": "bold red", "warn": "yellow"}
    for check in checks:
        table.add_row(
            f"[{styles[check.status]}]{check.status.upper()}[/]",
            check.name,
            _fmt(check.observed),
            _fmt(check.threshold),
            check.detail,
        )
    return table


def show_optimized(step: str, optimized: Optimized, float_onnx_bytes: int) -> None:
    c = optimized.comparison
    table = Table(
        title=f"[green]{step}[/] {optimized.version.ref}: {optimized.parent.ref} as ONNX "
        f"with INT8 weights (report {optimized.report.id[:12]}: {optimized.report.verdict})",
        title_justify="left",
    )
    table.add_column("")
    table.add_column(f"{optimized.parent.ref} (scikit-learn)", justify="right")
    table.add_column(f"{optimized.version.ref} (onnx-int8)", justify="right")
    table.add_column("change", justify="right")
    table.add_row(
        "size (pickle -> ONNX INT8)",
        f"{c.parent_size_bytes / 1024:.1f} KiB",
        f"{c.child_size_bytes / 1024:.1f} KiB",
        f"{c.size_ratio - 1:+.0%}",
    )
    table.add_row(
        "  of which INT8 weights",
        f"{float_onnx_bytes / 1024:.1f} KiB as float32 ONNX",
        f"{c.child_size_bytes / 1024:.1f} KiB",
        f"{c.child_size_bytes / float_onnx_bytes - 1:+.0%}",
    )
    table.add_row(
        "p95 latency, one row",
        f"{c.parent_p95_latency_ms:.3f} ms",
        f"{c.child_p95_latency_ms:.3f} ms",
        f"{c.parent_p95_latency_ms / c.child_p95_latency_ms:.0f}x faster",
    )
    if c.parent_metric is not None and c.child_metric is not None:
        table.add_row(
            f"hold-out {c.metric} ({c.n_rows:,} rows)",
            f"{c.parent_metric:.4f}",
            f"{c.child_metric:.4f}",
            f"{c.child_metric - c.parent_metric:+.4f}",
        )
    if c.prediction_agreement is not None:
        table.add_row("same label as parent", "", f"{c.prediction_agreement:.2%}", "")
    console.print(table)
    for note in c.notes:
        console.print(f"    [dim]{note}[/]")


def history_table(project: conveyor.Project) -> Table:
    registry = project.registry
    numbers = {v.id: v.number for v in registry.list(MODEL_NAME).items}
    table = Table(title=f"{MODEL_NAME}: who moved champion, when, why", title_justify="left")
    for column in ("at (UTC)", "from", "to", "actor", "forced", "reason"):
        table.add_column(column)
    for move in reversed(registry.alias_history(MODEL_NAME, "champion")):
        table.add_row(
            move.at.strftime("%H:%M:%S"),
            f"@{numbers[move.from_version_id]}" if move.from_version_id else "-",
            f"@{numbers[move.to_version_id]}" if move.to_version_id else "(removed)",
            move.actor or "-",
            "FORCED" if move.forced else "no",
            move.reason or "",
        )
    return table


def print_summary(project: conveyor.Project, summary: dict[str, Any], seconds: float) -> None:
    champion: ModelVersion | None = summary["champion"]
    optimized: Optimized | None = summary["optimized"]
    first, weak, better = summary["candidates"]
    console.print()
    console.print(report_table(summary["data"]["drift"]))
    console.print(checks_table(better.report))
    with conveyor.Project.open(project.root) as reopened:
        counts: dict[str, int] = {}
        for event in reopened.events.iter():
            counts[event.kind] = counts.get(event.kind, 0) + 1
    table = Table(title="what was recorded", title_justify="left")
    table.add_column("event kind")
    table.add_column("count", justify="right")
    for kind, count in counts.items():
        table.add_row(kind, str(count))
    console.print(table)
    root = project.root
    lines = [
        f"project      {project.name} in {root}",
        f"candidates   {first.version.ref} {first.report.verdict}, "
        f"{weak.version.ref} {weak.report.verdict}, {better.version.ref} {better.report.verdict}",
        f"champion     {champion.ref}: hold-out ROC AUC {champion.metrics['holdout_roc_auc']:.4f}"
        if champion
        else "champion     none (see the refused promotions above)",
    ]
    if optimized is not None:
        c = optimized.comparison
        lines.append(
            f"optimized    {optimized.version.ref}: {c.child_size_bytes / 1024:.1f} KiB "
            f"({c.size_ratio - 1:+.0%}), p95 {c.child_p95_latency_ms:.3f} ms, "
            f"{c.metric} {c.metric_difference or 0.0:+.4f} vs {optimized.parent.ref}"
        )
    lines += [
        f"took         {seconds:.1f} s",
        "",
        "Look around:",
        f"  conveyor models list -C {root}",
        f"  conveyor models show {MODEL_NAME}@champion -C {root}",
        f"  conveyor models compare {MODEL_NAME}@1 {MODEL_NAME}@3 -C {root}",
        f"  conveyor models gates {MODEL_NAME}@2 -C {root}",
        f"  conveyor models history {MODEL_NAME} champion -C {root}",
        f"  conveyor train {MODEL_NAME} -C {root}            # a new candidate, same gates",
        f"  conveyor events tail -C {root} -n 10",
        f"  conveyor data versions -C {root}",
        f"  conveyor data quarantine list -C {root}",
        f"  conveyor data drift transactions@1 transactions@2 -C {root}",
        f"  conveyor features list -C {root}",
        f"  conveyor models show customer-risk@1 -C {root}   # lineage through the features",
        f"  conveyor monitor {MODEL_NAME} --once -C {root}   # live without --once",
        f"  conveyor monitor drift {MODEL_NAME} --since 1h -C {root}",
        f"  conveyor monitor quality {MODEL_NAME} --since 1h -C {root}",
        f"  conveyor alerts list --all -C {root}",
        f"  conveyor features get customer_risk -e customer_id={summary['features']['customer']} "
        "-e amount=30 "
        f"-C {root}",
    ]
    style = "green" if champion is not None else "red"
    console.print(Panel("\n".join(lines), title="Conveyor quickstart", border_style=style))


if __name__ == "__main__":
    sys.exit(main())
