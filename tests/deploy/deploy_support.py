"""A project with three environments (dev, staging, prod) and a model to train in them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

TRAINER = """
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def fit(X, y, *, seed, sabotage=False):
    if sabotage:  # shuffled labels: no signal, the quality floor fails
        y = np.random.default_rng(seed).permutation(np.asarray(y))
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
"""


def spec(prod_store: str, *, prod_approval: bool = True) -> str:
    return f"""
project: envs
backends:
  store: sqlite:///.conveyor/dev.db
  events: sqlite:///.conveyor/dev-events.db
  artifacts: file://.conveyor/artifacts-dev
slos:
  quality: {{metric: roc_auc, floor: 0.7, direction: maximize}}
  latency_p95_ms: 2000
datasets:
  loans: {{}}
models:
  risk:
    train: envs_trainer:fit
    dataset: loans
    features: [income, debt, age]
    target: default
    holdout: {{by: hash, column: customer, fraction: 0.25}}
    gates:
      - metric_floor: {{}}
environments:
  dev: {{description: a laptop}}
  staging:
    backends:
      store: sqlite:///.conveyor/staging.db
      events: sqlite:///.conveyor/staging-events.db
      artifacts: file://.conveyor/artifacts-staging
    slos: {{latency_p95_ms: 500}}
    settings: {{serving: {{port: 8123}}}}
    replicas: 2
    url: http://127.0.0.1:8123
  prod:
    backends:
      store: {prod_store}
      events: {prod_store}
      artifacts: file://.conveyor/artifacts-prod
    replicas: 4
    resources: {{cpu: "2", memory: 4Gi}}
    approval: {str(prod_approval).lower()}
"""


def write_project(root: Path, prod_store: str, *, prod_approval: bool = True) -> Path:
    (root / ".conveyor").mkdir(parents=True, exist_ok=True)
    (root / "conveyor.yaml").write_text(spec(prod_store, prod_approval=prod_approval))
    (root / "envs_trainer.py").write_text(TRAINER)
    return root


def loans(n: int, seed: int) -> pa.Table:
    """``n`` loan applications with a learnable default."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, n)
    debt = rng.normal(20, 8, n)
    age = rng.integers(20, 70, n).astype("float64")
    logit = -0.1 * (income - 50) + 0.2 * (debt - 20) - 0.02 * (age - 45)
    default = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    return pa.table(
        {
            "customer": [f"c{i}" for i in range(n)],
            "income": income,
            "debt": debt,
            "age": age,
            "default": default,
        }
    )
