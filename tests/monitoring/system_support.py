"""A model for the system-monitor tests (importable by module name, so it unpickles)."""

from __future__ import annotations

import threading
from typing import Any

from conveyor.registry import PythonModel


class Boom(PythonModel):
    """Sums the row; raises on a row whose ``a`` is 666 (a model failing in production)."""

    def predict(self, frame: Any) -> Any:
        if (frame["a"] == 666).any():
            raise ValueError("666 is not a number this model takes")
        return frame.sum(axis=1).to_numpy()


#: Set by :class:`Hold` when a held row reaches the model; the test sets RELEASE.
STARTED = threading.Event()
RELEASE = threading.Event()


class Hold(PythonModel):
    """Sums the row; a row whose ``a`` is 7 waits in the model until RELEASE is set (at
    most 30 s): with a one-row queue, every other request meanwhile is shed."""

    def predict(self, frame: Any) -> Any:
        if (frame["a"] == 7).any():
            STARTED.set()
            RELEASE.wait(30)
        return frame.sum(axis=1).to_numpy()
