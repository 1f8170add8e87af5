"""A served classifier for the quality tests (importable by name, so it unpickles), and
prediction events written straight to the log for the judgment tests."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from conveyor.events.schema import Event
from conveyor.registry import PythonModel


class Logistic(PythonModel):
    """P(y = 1) = sigmoid(2a - b), as two columns (both classes' probabilities)."""

    def predict(self, frame: Any) -> Any:
        import numpy as np

        z = 2 * frame["a"].to_numpy() - frame["b"].to_numpy()
        p = 1 / (1 + np.exp(-z))
        return np.column_stack([1 - p, p])


def prediction(
    request_id: str,
    when: datetime,
    output: Any,
    *,
    model: str = "fraud",
    version: str = "1",
    inputs: list[dict[str, Any]] | None = None,
) -> Event:
    payload: dict[str, Any] = {
        "version_id": f"{model}-v{version}",
        "arm": "direct",
        "flag": None,
        "latency_ms": 1.0,
        "cached": False,
        "rows": len(output),
        "output": output,
    }
    if inputs is not None:
        payload["input"] = inputs
    return Event(
        "prediction",
        subject=model,
        subject_version=version,
        request_id=request_id,
        time=when,
        payload=payload,
    )


def calibrated_stream(
    n: int, start: datetime, *, seed: int, flip: float = 0.0, segment: float = 0.5
) -> tuple[list[Event], list[dict[str, Any]]]:
    """``n`` one-row predictions of a calibrated classifier a second apart, and their
    labels drawn from the predicted probability; in the segment (a share of the traffic,
    ``seg`` true in the input), a share ``flip`` of the labels is flipped."""
    rng = random.Random(seed)
    events, labels = [], []
    for i in range(n):
        p = rng.betavariate(0.3, 0.3)  # confident, as a fraud model is
        in_segment = rng.random() < segment
        y = int(rng.random() < p)
        if in_segment and rng.random() < flip:
            y = 1 - y
        rid = f"s{seed}-{start:%H%M}-{i}"
        events.append(
            prediction(
                rid,
                start + timedelta(seconds=i * 3600 / n),
                [[1 - p, p]],
                inputs=[{"seg": in_segment}],
            )
        )
        labels.append({"request_id": rid, "label": y})
    return events, labels
