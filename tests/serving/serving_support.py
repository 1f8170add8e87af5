"""Models the server tests register (importable by module name, so they unpickle)."""

from __future__ import annotations

import time
from typing import Any

from conveyor.registry import PythonModel


class Slow(PythonModel):
    """Sums the row, after ``seconds``: long enough to be caught in flight."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, frame: Any) -> Any:
        time.sleep(self.seconds)  # slow on purpose: the behaviour under test
        return frame.sum(axis=1).to_numpy()
