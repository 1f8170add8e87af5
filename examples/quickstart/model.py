"""Features and a scikit-learn model for the fraud data set.

The customer's typical amount is computed from that customer's *earlier*
transactions only (point-in-time correct), so the model never sees the future.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score

from data import CATEGORIES

FEATURES = [
    "log_amount",
    "amount_vs_usual",
    "hour",
    "is_night",
    "is_foreign",
    "card_present",
    "merchant_category",
    "customer_txn_count",
]
LABEL = "is_fraud"
CATEGORY_NAMES = list(CATEGORIES)


def add_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Model inputs from raw transactions (which must be sorted by time)."""
    out = frame.copy()
    out["merchant_category"] = out["merchant_category"].astype(pd.CategoricalDtype(CATEGORY_NAMES))
    by_customer = out.groupby("customer_id", sort=False)["amount"]
    previous_count = by_customer.cumcount()
    previous_sum = by_customer.cumsum() - out["amount"]
    usual = (previous_sum / previous_count).where(previous_count > 0)
    out["log_amount"] = np.log1p(out["amount"])
    out["amount_vs_usual"] = (out["amount"] / usual).fillna(1.0)
    out["hour"] = out["timestamp"].dt.hour
    out["is_night"] = (out["hour"] < 6) | (out["hour"] >= 23)
    out["customer_txn_count"] = previous_count
    return out


def time_split(frame: pd.DataFrame, holdout_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on the past, hold out the most recent ``holdout_days``: no look-ahead."""
    cutoff = frame["timestamp"].max() - pd.Timedelta(days=holdout_days)
    return frame[frame["timestamp"] <= cutoff], frame[frame["timestamp"] > cutoff]


def train(
    frame: pd.DataFrame, *, seed: int, **params: float | int
) -> HistGradientBoostingClassifier:
    model = HistGradientBoostingClassifier(
        categorical_features="from_dtype",
        random_state=seed,
        **params,  # type: ignore[arg-type]
    )
    model.fit(frame[FEATURES], frame[LABEL])
    return model


@dataclass(frozen=True)
class Evaluation:
    roc_auc: float
    average_precision: float
    recall_at_1pct_fpr: float
    rows: int
    positives: int

    def as_metrics(self) -> dict[str, float]:
        return {
            "roc_auc": self.roc_auc,
            "average_precision": self.average_precision,
            "recall_at_1pct_fpr": self.recall_at_1pct_fpr,
        }


def evaluate(model: HistGradientBoostingClassifier, frame: pd.DataFrame) -> Evaluation:
    scores = model.predict_proba(frame[FEATURES])[:, 1]
    labels = frame[LABEL].to_numpy()
    # The alert threshold a fraud team would use: flag 1% of legitimate transactions.
    threshold = np.quantile(scores[~labels], 0.99)
    return Evaluation(
        roc_auc=float(roc_auc_score(labels, scores)),
        average_precision=float(average_precision_score(labels, scores)),
        recall_at_1pct_fpr=float((scores[labels] > threshold).mean()),
        rows=len(frame),
        positives=int(labels.sum()),
    )


def single_row_latency_ms(
    model: HistGradientBoostingClassifier, frame: pd.DataFrame, n: int = 200
) -> list[float]:
    """Wall time of ``n`` one-row predictions, as a server would make them."""
    from threadpoolctl import threadpool_limits

    rows = [frame[FEATURES].iloc[[i]] for i in range(min(n, len(frame)))]
    timings = []
    # One row is too little work to share: OpenMP threads would only spin and,
    # on a busy machine, wait for a core (hundreds of ms). Servers run 1 thread.
    with threadpool_limits(limits=1):
        for row in rows:
            start = time.perf_counter()
            model.predict_proba(row)
            timings.append((time.perf_counter() - start) * 1000)
    return timings
