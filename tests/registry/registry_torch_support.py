"""PyTorch modules the registry tests register: importable by module name, so they unpickle."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from conveyor.registry import PythonModel

COLUMNS = ("a", "b", "c")


def regression_frame(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(size=n) for c in COLUMNS})
    target = (2 * frame["a"] - frame["b"] + 0.5 * frame["c"] ** 2).to_numpy()
    return frame, target


def train(module: nn.Module, frame: pd.DataFrame, target: np.ndarray, steps: int = 60) -> None:
    """A few Adam steps on the mean squared error: the weights are no longer the initial ones."""
    inputs = torch.tensor(frame[list(COLUMNS)].to_numpy(), dtype=torch.float32)
    expected = torch.tensor(target, dtype=torch.float32).reshape(-1, 1)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.02)
    module.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(module(inputs), expected)
        loss.backward()
        optimizer.step()


class KeywordNet(nn.Module):
    """A forward with ``**options``, which TorchScript cannot compile: saved pickled."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(len(COLUMNS), 1)

    def forward(self, x: torch.Tensor, **options: Any) -> torch.Tensor:
        return self.linear(x) * options.get("scale", 1.0)


class FramedNet(PythonModel, nn.Module):
    """Both a torch module and a PythonModel whose predict takes a frame."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.linear = nn.Linear(len(COLUMNS), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def predict(self, frame: Any) -> Any:
        inputs = torch.tensor(frame[list(COLUMNS)].to_numpy(), dtype=torch.float32)
        with torch.inference_mode():
            return self(inputs).numpy().ravel() + 100.0
