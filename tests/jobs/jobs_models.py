"""A model the worker tests register (importable by module name, so workers unpickle it)."""

from __future__ import annotations

import time
from typing import Any

from conveyor.registry import PythonModel


class SlowSum(PythonModel):
    """Sums each row, after ``seconds`` per call: slow enough to kill a worker mid-queue."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, frame: Any) -> Any:
        time.sleep(self.seconds)  # slow on purpose: the behaviour under test
        return frame.sum(axis=1).to_numpy()
