"""One way to call a fitted scikit-learn estimator, an :class:`OnnxModel` or a torch module.

A torch module is first wrapped by :func:`prepare` in a
:class:`~conveyor.training.optimize.torch_model.TorchPredictor`, which says
what its outputs mean (see that module's docstring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.training.optimize.onnx_model import OnnxModel
from conveyor.training.optimize.torch_model import (
    PruneResult,
    TorchPredictor,
    TorchTask,
    is_torch_module,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "classes",
    "has_proba",
    "head",
    "is_classifier",
    "n_rows",
    "name",
    "predict",
    "predict_proba",
    "prepare",
    "sklearn_input",
]


def prepare(model: Any, X: Any, task: TorchTask | None = None) -> Any:
    """``model`` ready for the functions below: a torch module (or a
    :class:`PruneResult`) becomes a :class:`TorchPredictor` for ``task``; others are unchanged."""
    if isinstance(model, PruneResult):
        return TorchPredictor.of(model.module, X, task, notes=model.notes)
    if is_torch_module(model):
        return TorchPredictor.of(model, X, task)
    return model


def is_classifier(model: Any) -> bool:
    if isinstance(model, TorchPredictor):
        return model.is_classifier
    if isinstance(model, OnnxModel):
        return model.signature.task == "classifier"
    from sklearn.base import is_classifier

    return bool(is_classifier(model))


def has_proba(model: Any) -> bool:
    if isinstance(model, TorchPredictor):
        return model.is_classifier
    if isinstance(model, OnnxModel):
        return model.signature.has_proba
    return hasattr(model, "predict_proba")


def classes(model: Any) -> Any:
    if isinstance(model, TorchPredictor):
        return model.classes
    if isinstance(model, OnnxModel):
        return model.signature.classes
    return getattr(model, "classes_", None)


def name(model: Any) -> str:
    if isinstance(model, TorchPredictor):
        return model.name
    if isinstance(model, OnnxModel):
        kind = "onnx-int8" if model.quantized_weights else "onnx"
        return f"{model.signature.estimator} ({kind})"
    return type(model).__name__


def predict(model: Any, X: Any) -> np.ndarray:
    import numpy as np

    if isinstance(model, OnnxModel | TorchPredictor):
        return model.predict(X)
    return np.asarray(model.predict(sklearn_input(X)))


def predict_proba(model: Any, X: Any) -> np.ndarray:
    import numpy as np

    if isinstance(model, TorchPredictor):
        return model.predict_proba(X)
    if isinstance(model, OnnxModel):
        # float32 rows sum to 1 within 1e-7, not within the 1.5e-8 log_loss checks.
        proba = model.predict_proba(X).astype(np.float64)
        normalized: np.ndarray = proba / proba.sum(axis=1, keepdims=True)
        return normalized
    return np.asarray(model.predict_proba(sklearn_input(X)), dtype=np.float64)


def sklearn_input(X: Any) -> Any:
    """A numpy array or pandas frame as given; anything else (Arrow, polars) as pandas."""
    import numpy as np

    if isinstance(X, np.ndarray) or type(X).__module__.split(".")[0] == "pandas":
        return X
    from conveyor.data.frames import to_arrow

    return to_arrow(X).to_pandas()


def n_rows(X: Any) -> int:
    shape = getattr(X, "shape", None)
    if shape is not None:
        return int(shape[0])
    num_rows = getattr(X, "num_rows", None)
    if num_rows is not None:
        return int(num_rows)
    from conveyor.data.frames import to_arrow

    return int(to_arrow(X).num_rows)


def head(X: Any, count: int) -> Any:
    if hasattr(X, "iloc"):
        return X.iloc[:count]
    if hasattr(X, "slice"):  # Arrow table, polars frame
        return X.slice(0, count)
    return X[:count]
