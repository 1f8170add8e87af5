"""Models the end-to-end rollout test registers (importable by module name to unpickle)."""

from __future__ import annotations

from typing import Any

from conveyor.registry import PythonModel


class Flaky(PythonModel):
    """Sums the row, but fails on rows whose ``a`` is above 1 (about 16 % of N(0, 1))."""

    def predict(self, frame: Any) -> Any:
        if (frame["a"] > 1.0).any():
            raise ValueError("a > 1: this candidate cannot handle it")
        return frame.sum(axis=1).to_numpy()
