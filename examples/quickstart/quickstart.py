"""Conveyor quickstart: from a notebook model to a recorded, checked artifact.

    python examples/quickstart/quickstart.py --project .demo --fresh

Steps, each written to the event log:
  1. create a project (conveyor.yaml + .conveyor/) on embedded defaults, with a
     data set whose expectations, sensitive columns and subject key are in the spec;
  2. generate card transactions with a fixed seed (the world shifts half-way),
     damage a few rows as upstream systems do, and ingest two periods through
     the data layer: bad rows land in quarantine with their reasons, good rows
     become dataset versions (emails encrypted at rest);
  3. compare the two periods with a drift report;
  4. train a scikit-learn model on the latest version (lineage recorded), hold
     out the most recent weeks; store it as a content-addressed artifact;
  5. check it against the SLOs of conveyor.yaml with a Report, and persist it;
  6. load the model back (sha256 verified); forget one customer (GDPR).
"""

from __future__ import annotations

import argparse
import pickle
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sklearn
from model import (
    FEATURES,
    Evaluation,
    add_features,
    evaluate,
    single_row_latency_ms,
    time_split,
    train,
)
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

import conveyor
from conveyor.checks import CheckResult, floor, run_gates
from conveyor.checks.persist import save_report
from conveyor.checks.render import report_table
from conveyor.data.crypto import generate_key
from conveyor.data.drift import DriftDetector
from conveyor.data.lineage import record_lineage
from data import CATEGORIES, generate_transactions, inject_bad_rows

SEED = 7
MODEL_NAME = "fraud-detector"
HOLDOUT_DAYS = 20
PARAMS = {"max_iter": 150, "learning_rate": 0.05, "max_leaf_nodes": 15, "l2_regularization": 1.0}
MIN_HOLDOUT_POSITIVES = 100  # fewer fraud cases and the AUC's confidence interval is too wide

# Piped output (make demo in CI) gets 110 columns rather than rich's 80.
console = Console(width=None if Console().is_terminal else 110)


DATASETS_SPEC = """
# The data set the quickstart ingests: every batch is checked against these
# expectations; failing rows go to quarantine with their reasons.
datasets:
  transactions:
    description: Card transactions, one row per authorisation.
    expectations:
      - {kind: schema, columns: {transaction_id: int64, amount: double, customer_id: int64}}
      - {kind: not_null, column: amount}
      - {kind: between, column: amount, min: 0, max: 50000}
      - {kind: in_set, column: merchant_category, values: [%s]}
      - {kind: unique, column: transaction_id}
      - {kind: row_count, min: 1000}
    on_failure: quarantine
    sensitive: [customer_email]     # encrypted at rest, masked in displays
    subject_keys: [customer_id]     # `conveyor data forget --key customer_id=...`
encryption:
  key_file: .conveyor/data.key      # demo only: keep real keys in a secret store
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
        conveyor.init_project(args.project, name="fraud-detection")
        with (args.project / "conveyor.yaml").open("a") as spec:
            spec.write(DATASETS_SPEC % ", ".join(CATEGORIES))
        (args.project / ".conveyor" / "data.key").write_text(generate_key())
    started = time.perf_counter()
    with conveyor.Project.open(args.project) as project:
        summary = run_quickstart(project, rows=args.rows)
    print_summary(project, summary, time.perf_counter() - started)
    # A failed gate is a finding the demo shows, not a failure of the demo.
    return 0


def ingest_periods(project: conveyor.Project, raw: pd.DataFrame) -> dict:
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
    reference = data.versions.read(first, actor="quickstart", purpose="drift")
    current = data.versions.read(latest, actor="quickstart", purpose="drift")
    current = current.filter(pc.greater_equal(current["timestamp"], pa.scalar(cutoff)))
    columns = ["amount", "merchant_category", "is_foreign", "card_present", "merchant_id"]
    drift = DriftDetector(columns=columns).fit(reference).score(current)
    drift_report = drift.to_report("dataset:transactions")
    drift_report.subject_version = "period 1 -> period 2"
    save_report(project.store, drift_report)
    project.events.emit(
        "data.drift",
        subject="transactions",
        payload={"report_id": drift_report.id, "verdict": drift_report.verdict},
    )
    drifted = [c.name for c in drift_report.checks if not c.passed]
    console.print(
        f"[green]3[/] drift period 1 -> 2: {len(drifted)} findings ({', '.join(drifted) or 'none'})"
    )
    return {"ingests": results, "latest": latest, "drift": drift_report}


def run_quickstart(project: conveyor.Project, *, rows: int) -> dict:
    events, store, artifacts = project.events, project.store, project.artifacts
    slos = project.spec.slos

    with console.status("Generating transactions..."):
        raw = generate_transactions(rows, seed=SEED)
    console.print(
        f"[green]1[/] generated {len(raw):,} transactions, fraud rate {raw['is_fraud'].mean():.2%}"
    )
    with console.status("Ingesting..."):
        data = ingest_periods(project, raw)
    latest = data["latest"]

    run = store.runs.start(
        "train",
        MODEL_NAME,
        project=project.name,
        params={**PARAMS, "seed": SEED, "holdout_days": HOLDOUT_DAYS, "data": latest.ref},
        tags={"python": platform.python_version(), "sklearn": sklearn.__version__},
    )
    events.emit("run.started", subject=MODEL_NAME, payload={"run_id": run.id, "kind": "train"})
    try:
        table = project.data.versions.read(latest, actor=f"run:{run.id}", purpose="training")
        record_lineage(store, run.id, latest.id, "input")
        frame = add_features(table.to_pandas())
        train_set, holdout = time_split(frame, HOLDOUT_DAYS)
        with console.status("Training..."):
            model = train(train_set, seed=SEED, **PARAMS)
            evaluation = evaluate(model, holdout)
            latency = single_row_latency_ms(model, holdout)
        store.runs.log_metrics(run.id, evaluation.as_metrics())
        events.emit(
            "model.trained",
            subject=MODEL_NAME,
            payload={
                "run_id": run.id,
                "train_rows": len(train_set),
                "holdout_rows": len(holdout),
                **evaluation.as_metrics(),
            },
        )
        console.print(
            f"[green]4[/] trained on {len(train_set):,} rows, hold-out "
            f"{len(holdout):,} rows: ROC AUC {evaluation.roc_auc:.3f}"
        )

        model_bytes = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        model_ref = artifacts.put(model_bytes, media_type="application/x-python-pickle")
        store.runs.add_artifact(run.id, "model", model_ref.digest, model_ref.size)
        events.emit(
            "artifact.stored",
            subject=MODEL_NAME,
            payload={
                "run_id": run.id,
                "name": "model",
                "digest": model_ref.digest,
                "size": model_ref.size,
            },
        )
        console.print(
            f"[green]5[/] model stored: {model_ref.size / 1024:.0f} KiB, {model_ref.digest[:19]}..."
        )

        context = {
            "evaluation": evaluation,
            "latency": latency,
            "train": train_set,
            "holdout": holdout,
        }
        gates = [
            _quality_gate(slos.quality),
            _latency_gate(slos.latency_p95_ms),
            _holdout_size_gate,
            _no_lookahead_gate,
        ]
        report = run_gates(
            f"model:{MODEL_NAME}", gates, context, kind="gate", subject_version=run.id[:12]
        )
        save_report(store, report, run_id=run.id)
        events.emit(
            "gate.decided",
            subject=MODEL_NAME,
            subject_version=run.id[:12],
            payload={
                "report_id": report.id,
                "verdict": report.verdict,
                "failed": [c.name for c in report.failures],
            },
            durable=True,
        )
        console.print(
            f"[green]6[/] gates: {report.verdict} ({len(report)} checks, report {report.id[:12]})"
        )

        # What a server will do: load by digest, verified, and predict the same.
        loaded = pickle.loads(artifacts.get(model_ref.digest))
        same = np.array_equal(
            loaded.predict_proba(holdout[FEATURES].head(500)),
            model.predict_proba(holdout[FEATURES].head(500)),
        )
        if not same:
            raise RuntimeError("the reloaded model predicts differently")
        console.print(
            "[green]7[/] model reloaded from the artifact store, sha256 verified, same predictions"
        )
        # The run succeeded (it trained and was judged); the verdict lives in its report.
        run = store.runs.finish(run.id, "succeeded")
    except BaseException as exc:
        store.runs.finish(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
        events.emit(
            "run.finished",
            subject=MODEL_NAME,
            payload={"run_id": run.id, "status": "failed", "error": str(exc)},
            durable=True,
        )
        raise
    events.emit(
        "run.finished",
        subject=MODEL_NAME,
        payload={"run_id": run.id, "status": run.status},
        durable=True,
    )
    # A customer asks to be forgotten: every row, quarantined row and event goes.
    customer = int(raw["customer_id"].iloc[0])
    forgotten = project.data.forget("customer_id", customer, actor="quickstart")
    console.print(
        f"[green]8[/] forgot customer {customer}: {forgotten.rows_removed} rows in "
        f"{forgotten.versions_rewritten} versions, {forgotten.quarantine_rows_removed} in "
        f"quarantine, {forgotten.events_erased} events"
    )
    return {
        "run": run,
        "evaluation": evaluation,
        "report": report,
        "model_ref": model_ref,
        "data": data,
        "latency_p95_ms": float(np.percentile(latency, 95)),
    }


# -- gates: each reads the SLOs of conveyor.yaml -------------------------------------------


def _quality_gate(slo):  # type: ignore[no-untyped-def]
    def quality_floor(ctx: dict) -> CheckResult:
        evaluation: Evaluation = ctx["evaluation"]
        if slo is None:
            return CheckResult("quality_floor", False, detail="no quality SLO in conveyor.yaml")
        value = getattr(evaluation, slo.metric)
        return floor(f"holdout_{slo.metric}", value, slo.floor, direction=slo.direction)

    return quality_floor


def _latency_gate(p95_budget_ms: float | None):  # type: ignore[no-untyped-def]
    def latency_p95(ctx: dict) -> CheckResult:
        p95 = float(np.percentile(ctx["latency"], 95))
        if p95_budget_ms is None:
            return CheckResult(
                "latency_p95_ms",
                True,
                observed=p95,
                severity="warning",
                detail="no latency SLO set; measured only",
            )
        return floor("latency_p95_ms", p95, p95_budget_ms, direction="minimize", unit=" ms")

    return latency_p95


def _holdout_size_gate(ctx: dict) -> CheckResult:
    positives = ctx["evaluation"].positives
    return CheckResult(
        "holdout_positives",
        positives >= MIN_HOLDOUT_POSITIVES,
        observed=positives,
        threshold=MIN_HOLDOUT_POSITIVES,
        detail=f"{positives} fraud cases in the hold-out "
        f"({'enough' if positives >= MIN_HOLDOUT_POSITIVES else 'too few'} to trust the AUC)",
    )


def _no_lookahead_gate(ctx: dict) -> CheckResult:
    last_train, first_holdout = ctx["train"]["timestamp"].max(), ctx["holdout"]["timestamp"].min()
    return CheckResult(
        "holdout_after_training",
        bool(last_train < first_holdout),
        observed=first_holdout.isoformat(),
        threshold=f"> {last_train.isoformat()}",
        detail="every hold-out row is later than every training row",
    )


def print_summary(project: conveyor.Project, summary: dict, seconds: float) -> None:
    report = summary["report"]
    console.print()
    console.print(report_table(summary["data"]["drift"]))
    console.print(report_table(report))
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
    evaluation = summary["evaluation"]
    root = project.root
    lines = [
        f"project      {project.name} in {root}",
        f"run          {summary['run'].id} ({summary['run'].status})",
        f"model        {summary['model_ref'].digest}",
        f"metrics      ROC AUC {evaluation.roc_auc:.3f}, average precision "
        f"{evaluation.average_precision:.3f}, recall at 1% FPR {evaluation.recall_at_1pct_fpr:.1%}",
        f"latency      p95 {summary['latency_p95_ms']:.2f} ms for one row",
        f"verdict      {report.verdict.upper()} (report {report.id})",
        f"took         {seconds:.1f} s",
        "",
        "Look around:",
        f"  conveyor doctor -C {root}",
        f"  conveyor events tail -C {root} -n 10",
        f"  conveyor runs list -C {root}",
        f"  conveyor reports show {report.id} -C {root}",
        f"  conveyor data versions -C {root}",
        f"  conveyor data quarantine list -C {root}",
        f"  conveyor data drift transactions@1 transactions@2 -C {root}",
    ]
    style = "green" if report.passed else "red"
    console.print(Panel("\n".join(lines), title="Conveyor quickstart", border_style=style))


if __name__ == "__main__":
    sys.exit(main())
