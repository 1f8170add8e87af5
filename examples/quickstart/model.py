"""Features and a scikit-learn model for the fraud data set.

``conveyor train fraud-detector`` calls the two entry points named in the
``models:`` section of ``conveyor.yaml``:

- ``prepare: model:add_features`` turns the data set's rows into model inputs.
  A customer's usual amount comes from that customer's *earlier* transactions
  only (point-in-time correct), so the model never sees the future;
- ``train: model:fit`` fits a model on the training rows (the hold-out was set
  aside before) and returns it; Conveyor registers it and runs its gates.

The model is a ``Pipeline`` starting with a ``ColumnTransformer`` (one-hot
merchant category, scaled numbers) and ending with a small neural network:
it exports to ONNX with one named input per column, and its weight matrices
are what INT8 quantization makes smaller (a tree ensemble has none).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

NUMERIC = [
    "log_amount",
    "log_amount_vs_usual",
    "hour",
    "is_night",
    "is_foreign",
    "card_present",
    "log_customer_txn_count",
]
CATEGORICAL = ["merchant_category"]
FEATURES = NUMERIC + CATEGORICAL
LABEL = "is_fraud"


def add_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Model inputs from raw transactions; rows keep their order (and count)."""
    out = frame.copy()
    # Features look backwards in time: compute them on the rows sorted by time,
    # then let pandas align them back on the original index.
    by_time = out.sort_values("timestamp", kind="stable")
    by_customer = by_time.groupby("customer_id", sort=False)["amount"]
    previous_count = by_customer.cumcount()
    previous_sum = by_customer.cumsum() - by_time["amount"]
    usual = (previous_sum / previous_count).where(previous_count > 0)
    hour = out["timestamp"].dt.hour
    # Plain strings and floats: what an ONNX graph takes as named inputs.
    out["merchant_category"] = out["merchant_category"].astype(str)
    out["log_amount"] = np.log1p(out["amount"])
    out["log_amount_vs_usual"] = np.log((by_time["amount"] + 1) / (usual + 1)).fillna(0.0)
    out["hour"] = hour.astype("float64")
    out["is_night"] = ((hour < 6) | (hour >= 23)).astype("float64")
    out["is_foreign"] = out["is_foreign"].astype("float64")
    out["card_present"] = out["card_present"].astype("float64")
    out["log_customer_txn_count"] = np.log1p(previous_count.astype("float64"))
    return out


def fit(
    X: pd.DataFrame,
    y: pd.Series,
    *,
    seed: int,
    hidden_layers: Sequence[int] = (64, 32),
    epochs: int = 12,
    alpha: float = 0.01,
    batch_size: int = 500,
    learning_rate: float = 0.001,
) -> Any:
    """A fitted one-hot + scaling + MLP pipeline (``conveyor train``'s entry point)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("numbers", StandardScaler(), NUMERIC),
                        ("category", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                    ]
                ),
            ),
            (
                "classify",
                MLPClassifier(
                    hidden_layer_sizes=tuple(hidden_layers),
                    max_iter=epochs,
                    alpha=alpha,
                    batch_size=batch_size,
                    learning_rate_init=learning_rate,
                    random_state=seed,
                ),
            ),
        ]
    )
    # Small matrices: BLAS threads would only fight for the cores (10x slower on a busy
    # machine). A fixed number of epochs is the point of the demo, not a convergence bug.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X[FEATURES], y)
    return model


# -- the feature store's model (features_demo.py) -----------------------------------------


def amount_vs_usual(table: Any) -> Any:
    """On-demand feature: the amount against the customer's 7-day mean (log ratio; null
    without history). The same function runs on the training frame and on each request."""
    import pyarrow as pa
    import pyarrow.compute as pc

    amount = pc.cast(table["amount"], pa.float64())
    usual = pc.cast(table["amount_mean_7d"], pa.float64())
    ratio = pc.ln(pc.divide(pc.add(amount, 1.0), pc.add(usual, 1.0)))
    return table.append_column("amount_vs_usual", ratio)


def fit_history(X: pd.DataFrame, y: pd.Series, *, seed: int) -> Any:
    """Gradient-boosted trees on the request's fields and the customer's history (they
    take the nulls of a customer without history as they come)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=seed).fit(
        X, y
    )
