"""Fits the gateway's complexity classifier on the train families of
``src/conveyor/gateway/data/complexity_prompts.jsonl`` and writes its coefficients to
``src/conveyor/gateway/data/complexity_model.json`` (deterministic: Newton's method on
an L2-penalized logistic regression, numpy only; nothing of this runs in the gateway).

    .venv/bin/python scripts/gateway_complexity_fit.py

``tests/gateway/test_gateway_complexity.py`` fits again and checks the committed
coefficients are what this data gives.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src/conveyor/gateway/data/complexity_prompts.jsonl"
MODEL = ROOT / "src/conveyor/gateway/data/complexity_model.json"
#: The L2 penalty (on standardized features).
PENALTY = 1.0


def load(path: Path = DATA) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fit(records: list[dict[str, Any]], penalty: float = PENALTY) -> dict[str, Any]:
    """The model JSON of a logistic regression fitted on ``records`` (their train split)."""
    from conveyor.gateway.complexity import FEATURES, features

    train = [r for r in records if r["split"] == "train"]
    x = np.array([features(r["text"]) for r in train], dtype=np.float64)
    y = np.array([1.0 if r["label"] == "complex" else 0.0 for r in train])
    means = x.mean(axis=0)
    scales = x.std(axis=0)
    scales[scales == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - means) / scales])
    w = np.zeros(z.shape[1])
    ridge = np.eye(z.shape[1]) * penalty
    ridge[0, 0] = 0.0  # the bias is not penalized
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        gradient = z.T @ (p - y) + ridge @ w
        hessian = (z.T * (p * (1 - p))) @ z + ridge
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return {
        "features": list(FEATURES),
        "means": [round(float(v), 10) for v in means],
        "scales": [round(float(v), 10) for v in scales],
        "weights": [round(float(v), 10) for v in w[1:]],
        "bias": round(float(w[0]), 10),
        "threshold": 0.5,
        "penalty": penalty,
        "fitted_on": {
            "data": "data/complexity_prompts.jsonl",
            "train": len(train),
            "families": sorted({r["family"] for r in train}),
        },
    }


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    model = fit(load())
    MODEL.write_text(json.dumps(model, indent=2) + "\n")
    print(f"wrote {MODEL}")


if __name__ == "__main__":
    main()
