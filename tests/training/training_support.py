"""What the training tests share: a loans data set and a partial_fit model, as source text.

The trainers live in the test project's folder (imported by module name, as
a user's would be), so the shared model is kept here as source to write there.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

#: A fixed scaling in front of SGD, which keeps partial_fit (a Pipeline would not).
SCALED_SGD = """
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import SGDClassifier


class ScaledSGD(BaseEstimator, ClassifierMixin):
    def __init__(self, seed):
        # A constant small step: the default schedule diverges for some seeds.
        self.sgd = SGDClassifier(
            loss="log_loss", random_state=seed, learning_rate="constant", eta0=0.01
        )
        self.classes_ = np.array([0, 1])

    def _x(self, X):
        return (np.asarray(X, dtype=float) - [50.0, 20.0, 45.0]) / [15.0, 8.0, 12.0]

    def partial_fit(self, X, y):
        self.sgd.partial_fit(self._x(X), y, classes=self.classes_)
        return self

    def predict(self, X):
        return self.sgd.predict(self._x(X))

    def predict_proba(self, X):
        return self.sgd.predict_proba(self._x(X))

    @property
    def coef_(self):
        return self.sgd.coef_


def fit_sgd(X, y, *, seed):
    model = ScaledSGD(seed)
    for _ in range(5):
        model.partial_fit(X, y)
    return model


def fit_sgd(X, y, *, seed):
    model = ScaledSGD(seed)
    for _ in range(5):
        model.partial_fit(X, y)
    return model
"""


def loans(n: int, seed: int, start: int = 0, *, noise: bool = False) -> pa.Table:
    """``n`` loan applications with a learnable default; ``noise`` shuffles the labels."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, n)
    debt = rng.normal(20, 8, n)
    age = rng.integers(20, 70, n).astype("float64")
    logit = -0.1 * (income - 50) + 0.2 * (debt - 20) - 0.02 * (age - 45)
    default = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    if noise:  # labels with no relation to the features: no model can pass the floor
        default = rng.permutation(default)
    return pa.table(
        {
            "customer": [f"c{start + i}" for i in range(n)],
            "income": income,
            "debt": debt,
            "age": age,
            "region": rng.choice(["north", "south"], n),
            "default": default,
        }
    )
