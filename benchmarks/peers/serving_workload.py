"""The serving workload: features, seeded data, request bodies. Standard library only.

Imported by every side of ``benchmarks/serving.py`` (Conveyor's venv and each
peer's), so every server fits the same models on the same rows and gets the
same request.
"""

from __future__ import annotations

import json
import random

N_FEATURES = 20
N_TRAIN = 5_000
SEED = 7
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
RF_TREES = 100


def training_rows() -> tuple[list[list[float]], list[int]]:
    """Seeded rows and labels: a linear rule plus noise, so both models learn something."""
    rng = random.Random(SEED)
    rows, labels = [], []
    for _ in range(N_TRAIN):
        row = [rng.gauss(0.0, 1.0) for _ in range(N_FEATURES)]
        score = sum(row[:5]) - 0.5 * sum(row[5:10]) + rng.gauss(0.0, 1.0)
        rows.append(row)
        labels.append(int(score > 0))
    return rows, labels


def request_row() -> list[float]:
    """The one row every request carries (cache off on Conveyor: it is not memoised)."""
    rng = random.Random(SEED + 1)
    return [round(rng.gauss(0.0, 1.0), 6) for _ in range(N_FEATURES)]


def records_body() -> str:
    """Conveyor's native body (also what the bare Starlette endpoints take)."""
    return json.dumps({"records": [dict(zip(FEATURES, request_row(), strict=True))]})


def v2_body() -> str:
    """Open Inference Protocol v2 (MLServer): one FP64 tensor of shape [1, 20]."""
    tensor = {"name": "input-0", "shape": [1, N_FEATURES], "datatype": "FP64"}
    return json.dumps({"inputs": [{**tensor, "data": request_row()}]})


def bentoml_body() -> str:
    """BentoML's JSON: the API's one argument by name, a [1, 20] array."""
    return json.dumps({"features": [request_row()]})


def fit(kind: str, *, frame: bool = False):  # type: ignore[no-untyped-def]
    """Fit ``lr`` (LogisticRegression) or ``rf`` (RandomForest, 100 trees) in this venv.

    ``frame``: fit on a pandas DataFrame with columns f0..f19 (Conveyor passes
    named columns to the model; fitting on the same avoids sklearn's warning).
    """
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rows, labels = training_rows()
    x, y = np.asarray(rows), np.asarray(labels)
    if frame:
        import pandas as pd

        x = pd.DataFrame(x, columns=FEATURES)
    if kind == "lr":
        return LogisticRegression(max_iter=1000).fit(x, y)
    if kind == "rf":
        return RandomForestClassifier(n_estimators=RF_TREES, random_state=SEED, n_jobs=1).fit(x, y)
    raise ValueError(f"kind: expected lr or rf, got {kind!r}")
