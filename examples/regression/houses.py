"""House prices: the data the regression example generates, and the model it trains.

``conveyor train house-price`` imports ``fit`` from this file (the spec's
``train: houses:fit``); ``generate`` writes the CSV batches the example ingests.
Prices follow area, bedrooms, age and distance to the centre, with noise; a
``shift`` raises every price by that fraction (the drift the example plants).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

FEATURES = ["area_m2", "bedrooms", "age_years", "distance_km"]
TARGET = "price"


def generate(rows: int, *, seed: int, first_id: int = 1, shift: float = 0.0) -> pd.DataFrame:
    """``rows`` houses with ids from ``first_id``; ``bedrooms`` is an integer column."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(35, 220, rows).round(1)
    bedrooms = np.clip((area / 35).round() + rng.integers(-1, 2, rows), 1, 7).astype("int64")
    age = rng.uniform(0, 80, rows).round(0)
    distance = rng.gamma(2.0, 4.0, rows).round(2)
    price = (
        60_000
        + 2_900 * area
        + 12_000 * bedrooms
        - 900 * age
        - 4_000 * distance
        + rng.normal(0, 15_000, rows)
    ) * (1 + shift)
    return pd.DataFrame(
        {
            "house_id": np.arange(first_id, first_id + rows, dtype="int64"),
            "area_m2": area,
            "bedrooms": bedrooms,
            "age_years": age,
            "distance_km": distance,
            "price": price.round(2),
        }
    )


def fit(X: pd.DataFrame, y: pd.Series, *, seed: int, alpha: float = 1.0) -> Any:
    """A scaled ridge regression: exports to ONNX with one input per column."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=alpha, random_state=seed)).fit(X, y)
