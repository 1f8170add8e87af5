"""BentoML's side: two services over a joblib scikit-learn model (runs in .bench-venvs/bentoml).

    BENCH_MODEL=rf.joblib bentoml serve bentoml_serving:Plain --port 8000
    BENCH_MODEL=rf.joblib bentoml serve bentoml_serving:Batched --port 8000

``Plain`` answers one request per call; ``Batched`` uses BentoML's adaptive
batching (``batchable=True``, up to 64 rows as for Conveyor; BentoML's
dispatcher picks the wait itself, ``max_latency_ms`` is only the deadline).
Both take ``{"features": [[...20 floats]]}`` and are ready at ``/readyz``.
"""

from __future__ import annotations

import os

import bentoml
import joblib
import numpy as np


def _load() -> object:
    model = joblib.load(os.environ["BENCH_MODEL"])
    model.predict(np.zeros((1, 20)))
    return model


@bentoml.service(workers=1)
class Plain:
    def __init__(self) -> None:
        self.model = _load()

    @bentoml.api
    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict(features)  # type: ignore[attr-defined,no-any-return]


@bentoml.service(workers=1)
class Batched:
    def __init__(self) -> None:
        self.model = _load()

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)
    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict(features)  # type: ignore[attr-defined,no-any-return]
