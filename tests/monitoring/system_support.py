"""A model for the system-monitor tests (importable by module name, so it unpickles)."""

from __future__ import annotations

from typing import Any

from conveyor.registry import PythonModel


class Boom(PythonModel):
    """Sums the row; raises on a row whose ``a`` is 666 (a model failing in production)."""

    def predict(self, frame: Any) -> Any:
        if (frame["a"] == 666).any():
            raise ValueError("666 is not a number this model takes")
        return frame.sum(axis=1).to_numpy()
