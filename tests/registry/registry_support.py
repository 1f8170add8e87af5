"""Models the registry tests register: importable by module name, so they unpickle."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from conveyor.registry import PythonModel


def training_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n).astype("int64"),
            "income": rng.normal(50_000, 15_000, n),
            "score": rng.random(n),
        }
    )
    return frame


def labels(frame: pd.DataFrame) -> Any:
    return (frame["score"] + frame["age"] / 100 > 0.9).astype("int64")


class Doubler(PythonModel):
    """Twice the income: a model Conveyor has no flavor for, written as a PythonModel."""

    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def predict(self, frame: Any) -> Any:
        return (frame["income"] * self.factor).to_numpy()
