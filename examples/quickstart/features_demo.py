"""The quickstart's feature-store step: customer features defined once, trained on, served.

The fraud model of the earlier steps computes a customer's usual spend in its own
``prepare`` function, and a server would have to compute it again. Here the same
signal comes from the feature store instead:

1. ``features:`` in conveyor.yaml declares the customer entity, a view of the
   transactions with spend and counts over 1 h, 24 h and 7 days, an on-demand
   feature (this amount against the customer's 7-day mean, computed from the
   request by the same function at training and serving time) and a service;
2. ``conveyor features apply`` checks them against the data and versions them;
3. ``customer-risk`` trains on an entity/label frame (customer, time, the request's
   fields, the label): the service's features are joined point-in-time, so no
   transaction sees its own future;
4. the aggregates are materialized to the online store;
5. the server predicts from ``{"customer_id": ..., "amount": ...}``: the
   customer's features are read online, and the prediction event records them.

The demo's transactions are historic (August to October), so the online values are
materialized as of the last transaction rather than as of today.
"""

from __future__ import annotations

from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
from rich.console import Console

import conveyor
from conveyor.features.materialize import materialize
from conveyor.governance.keys import ApiKeys
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.training.flow import train_candidate

MODEL = "customer-risk"
LABELS = "card_checks"

FEATURES_SPEC = """
# Customer features, defined once: the training frame (point-in-time correct) and
# the online store are both computed from these definitions.
features:
  entities:
    customer: {join_keys: [customer_id], value_types: {customer_id: int64}}
  views:
    customer_spend:
      entities: [customer]
      source: {dataset: transactions}
      event_time: timestamp
      ttl: 365d                       # the demo's data is historic
      aggregates:                     # per customer, over (t - window, t]
        - {column: amount, functions: [sum, count, mean], windows: [1h, 24h, 7d]}
  on_demand:
    amount_vs_usual:                  # the request's amount against the 7-day mean
      function: model:amount_vs_usual
      inputs: [amount, customer_spend:amount_mean_7d]
      outputs: {amount_vs_usual: double}
  services:
    customer_risk: {features: ["customer_spend:*", amount_vs_usual]}
"""

MODEL_SPEC = """
  # Trained on the feature store: card_checks holds customer_id, as_of, the request's
  # fields and the label; the service's features are joined as of each as_of.
  customer-risk:
    train: model:fit_history
    dataset: card_checks
    feature_service: customer_risk
    entity_time: as_of
    features: [amount, hour, is_foreign, card_present, amount_vs_usual, amount_mean_7d,
               amount_count_1h, amount_count_24h, amount_sum_24h]
    target: is_fraud
    holdout: {by: time, column: as_of, fraction: 0.2}
    gates:                            # fewer fields than fraud-detector: its own floor
      - metric_floor: {metric: roc_auc, floor: 0.8}
"""

REQUEST_FIELDS = ["amount", "hour", "is_foreign", "card_present"]


def label_frame(raw: pd.DataFrame, *, rows: int = 20_000, seed: int = 7) -> pa.Table:
    """Entity/label rows: sampled transactions, each read as of one second before it (its
    own row is not yet in its customer's history), with the fields a request carries."""
    clean = raw[raw["amount"].notna() & (raw["amount"] >= 0)]
    picked = clean.sample(n=min(rows, len(clean)), random_state=seed).sort_values("timestamp")
    return pa.table(
        {
            "customer_id": pa.array(picked["customer_id"], pa.int64()),
            "as_of": pa.array(picked["timestamp"] - pd.Timedelta(seconds=1)),
            "amount": pa.array(picked["amount"], pa.float64()),
            "hour": pa.array(picked["timestamp"].dt.hour, pa.int64()),
            "is_foreign": pa.array(picked["is_foreign"].astype(int), pa.int64()),
            "card_present": pa.array(picked["card_present"].astype(int), pa.int64()),
            "is_fraud": pa.array(picked["is_fraud"].astype(int), pa.int64()),
        }
    )


def run_features(
    project: conveyor.Project, console: Console, raw: pd.DataFrame, *, step: str
) -> dict[str, Any]:
    """Apply, train on the service, materialize, serve by customer id."""
    applied = project.features.apply(actor="ana")
    console.print(
        f"[green]{step}[/] features apply: "
        + ", ".join(f"{a.kind} {a.name} @{a.version} ({a.status})" for a in applied)
    )
    labels = project.data.ingest(LABELS, label_frame(raw), actor="quickstart", new=True)
    candidate = train_candidate(project, MODEL, seed=7, actor="ana")
    version = candidate.version
    console.print(
        f"    {version.ref} trained on {labels.rows_accepted:,} customer checks joined "
        f"point-in-time with {len(version.inputs[0]['features'])} features of "
        f"service customer_risk: ROC AUC {version.metrics['holdout_roc_auc']:.4f} on the "
        f"hold-out, gates {candidate.report.verdict}"
    )
    (used,) = version.inputs
    lineage = " -> ".join(
        [
            *used["views"]["customer_spend"]["datasets"],
            f"view customer_spend v{used['views']['customer_spend']['version']}",
            f"service customer_risk v{used['version']}",
            version.ref,
        ]
    )
    console.print(f"    lineage (conveyor models show {version.ref}): {lineage}")

    last = raw["timestamp"].max().to_pydatetime()
    (done,) = materialize(project, now=last, actor="ana")
    console.print(
        f"    materialized customer_spend as of the last transaction: {done.aggregates:,} "
        "customers' aggregates in the online store"
    )

    keys = ApiKeys(project.store, project.events)
    predictor, _ = keys.create("quickstart-risk", "predictor", actor="quickstart")
    RouteStore(project.store, project.events, project.registry).set(
        MODEL, RoutePolicy.fixed(version.number), actor="ana", reason="serve by customer id"
    )
    customer = int(raw["customer_id"].iloc[-1])
    requests = [
        {"customer_id": customer, "amount": 30.0, "hour": 14, "is_foreign": 0, "card_present": 1},
        {"customer_id": customer, "amount": 2400.0, "hour": 3, "is_foreign": 1, "card_present": 0},
    ]
    with (
        ThreadedServer(create_app(project)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        answer = client.post(
            f"/v1/models/{MODEL}/predict",
            json={"records": requests},
            headers={"x-api-key": predictor},
        )
        answer.raise_for_status()
    predictions = answer.json()["predictions"]
    project.events.flush()
    (event,) = project.events.query(kind="prediction", subject=MODEL, limit=1).items
    values = event.payload["features"]["rows"][0]["values"]
    console.print(
        f"    POST /v1/models/{MODEL}/predict with customer_id {customer} and the "
        f"transaction's fields: labels {predictions} for a 30.00 afternoon purchase and a "
        "2,400.00 foreign one at 3 am",
        soft_wrap=True,
    )
    console.print(
        "    features read online (recorded in the prediction event): "
        + ", ".join(f"{k}={_short(v)}" for k, v in values.items()),
        soft_wrap=True,
    )
    return {
        "version": version.ref,
        "customer": customer,
        "predictions": predictions,
        "features": values,
    }


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
