"""A fitted linear model's prediction as data: its formula, recorded beside its artifact.

scikit-learn's ``predict`` on one row of a linear model is about 120 us, of
which the arithmetic (a dot product, an intercept, an argmax) is 3 us; and a
server that unpickles the model first imports scikit-learn, SciPy and pandas
(about 1.2 s of a 1.5 s start). For the linear estimators whose ``predict``
is scikit-learn's generic one (LogisticRegression, LinearSVC, SGDClassifier,
Perceptron, LinearRegression; an estimator or subclass with its own
``predict`` or decision function, such as Ridge, RidgeClassifier or
ElasticNet, is left to it), and for a Pipeline of StandardScalers (or
``passthrough``) ending in one, :func:`extract` reads the arithmetic's arrays
off the fitted model:

    scalers:                    (X - mean_) / scale_, as their ``transform`` does it
    classifier (LinearClassifierMixin): scores = X @ coef_.T + intercept_
        one column -> classes_[scores > 0]; several -> classes_[argmax(scores)]
    regressor (LinearModel):            X @ coef_(.T) + intercept_

and a :class:`Formula` applies it to a finite float64 matrix with NumPy alone,
the same operations on the same arrays in the same order, so the answers are
the model's to the bit.

At registration (:func:`compile_model`) the formula is checked against the
model's own ``predict`` on rows of the training frame and on random rows, and
stored as an ``.npz`` artifact (no pickle) whose digest the version records
(``ModelVersion.compiled``). A server then answers from it without unpickling
the model (:mod:`conveyor.serving.pool`): the model artifact's sha256 is still
checked, and the model itself is loaded only when something needs it (a
matrix that is not all finite float64 goes to the model's own ``predict``, so
the caller gets scikit-learn's answer or error, word for word).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.registry.signature import Signature

__all__ = ["KIND", "DeferredModel", "Formula", "NotOnTheLoop", "compile_model", "extract", "store"]

#: ``ModelVersion.compiled["kind"]`` of a recorded formula (the .npz layout's version).
KIND = "linear-formula/1"

#: Parameters beyond which a model is not compiled (its formula artifact would be large,
#: and a model that size gains little from skipping the import).
MAX_PARAMETERS = 4_000_000


@dataclass(frozen=True, eq=False)
class Formula:
    """Scalers then a linear map: ``predict(matrix)`` on a finite float64 matrix."""

    #: Each scaler's ``(mean, scale)``; either None when the scaler does not apply it.
    scalers: tuple[tuple[np.ndarray | None, np.ndarray | None], ...]
    weights: np.ndarray
    intercept: Any
    #: The classifier's ``classes_``; None for a regressor.
    classes: np.ndarray | None

    def __call__(self, matrix: Any) -> Any:
        for mean, scale in self.scalers:
            out = matrix - mean if mean is not None else matrix.copy()
            if scale is not None:
                out /= scale
            matrix = out
        scores = matrix @ self.weights + self.intercept
        if self.classes is None:
            return scores
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        # (bools index as 0 and 1: no numpy import on the request path to name intp)
        indices = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes.take(indices, axis=0)

    @property
    def parameters(self) -> int:
        sizes = [self.weights.size]
        for mean, scale in self.scalers:
            sizes += [0 if mean is None else mean.size, 0 if scale is None else scale.size]
        return sum(sizes)

    # -- the artifact ------------------------------------------------------------

    def to_bytes(self) -> bytes | None:
        """The formula as an ``.npz`` (no pickled object), or None when its classes are
        not numbers, booleans or strings (they could not be stored without pickle)."""
        import numpy as np
        import orjson

        arrays: dict[str, np.ndarray] = {
            "weights": _blas_order(self.weights),
            "intercept": np.asarray(self.intercept),
        }
        meta: dict[str, Any] = {
            "kind": KIND,
            "scalers": [[m is not None, s is not None] for m, s in self.scalers],
            "intercept_scalar": not isinstance(self.intercept, np.ndarray),
            "classes": None,
        }
        for i, (mean, scale) in enumerate(self.scalers):
            if mean is not None:
                arrays[f"mean{i}"] = mean
            if scale is not None:
                arrays[f"scale{i}"] = scale
        if self.classes is not None:
            classes = self.classes
            meta["classes"] = classes.dtype.kind
            if classes.dtype.kind == "O":
                if not all(type(c) is str for c in classes.tolist()):
                    return None
                classes = classes.astype(str)
            elif classes.dtype.kind not in "biufU":
                return None
            arrays["classes"] = classes
        arrays["meta"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
        return _npz(arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> Formula:
        """The formula :meth:`to_bytes` wrote (ValueError for anything else)."""
        import numpy as np
        import orjson

        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = orjson.loads(arrays.pop("meta").tobytes())
        if meta.get("kind") != KIND:
            raise ValueError(f"not a {KIND} artifact: {meta.get('kind')!r}")
        scalers = tuple(
            (
                arrays[f"mean{i}"] if has_mean else None,
                arrays[f"scale{i}"] if has_scale else None,
            )
            for i, (has_mean, has_scale) in enumerate(meta["scalers"])
        )
        intercept: Any = arrays["intercept"]
        if meta["intercept_scalar"]:
            intercept = intercept.item()
        classes = arrays.get("classes")
        if classes is not None and meta["classes"] == "O":
            classes = classes.astype(object)  # Python strs, as a fitted classes_ holds them
        return cls(scalers, arrays["weights"], intercept, classes)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` np.load reads, with fixed entry times: the same formula, the same
    bytes, so the same digest (np.savez stamps each entry with the current time)."""
    import zipfile

    import numpy as np

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(entry, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return out.getvalue()


def _blas_order(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` laid out contiguously in the order its elements already run in: a
    column-strided view (a multi-target regressor's ``coef_.T`` is a view of a padded
    column-major array) is written column-major, so the product reaches BLAS transposed
    as the live model's did, and sums in the same order."""
    import numpy as np

    if matrix.ndim == 2 and not matrix.flags.c_contiguous and matrix.strides[0] < matrix.strides[1]:
        return np.asfortranarray(matrix)
    return matrix


def extract(estimator: Any) -> Formula | None:
    """The formula of a fitted linear estimator (or StandardScalers then one), or None
    for anything else. Imports scikit-learn only when it is already imported (a model
    of another library needs none of it)."""
    import sys

    if "sklearn" not in sys.modules:
        return None
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        return _pipeline(estimator)
    return _linear(estimator)


def _linear(estimator: Any) -> Formula | None:
    import numpy as np
    from sklearn.linear_model import _base
    from sklearn.linear_model._base import LinearClassifierMixin, LinearModel

    cls = type(estimator)
    coef = getattr(estimator, "coef_", None)
    intercept = getattr(estimator, "intercept_", None)
    if not isinstance(coef, np.ndarray) or coef.dtype.kind != "f" or coef.ndim not in (1, 2):
        return None  # unfitted, or sparse coefficients (sparsify()): the model's own path
    if not isinstance(intercept, np.ndarray | float | int):
        return None
    weights = coef.T if coef.ndim == 2 else coef

    if isinstance(estimator, LinearClassifierMixin):
        if (
            cls.predict is not LinearClassifierMixin.predict
            or cls.decision_function is not LinearClassifierMixin.decision_function
        ):
            return None
        classes = getattr(estimator, "classes_", None)
        if not isinstance(classes, np.ndarray):
            return None
        return Formula((), weights, intercept, classes)

    if isinstance(estimator, LinearModel):
        # LinearModel's predict, or the one that only documents it for multi-output models
        known = {LinearModel.predict}
        multi = getattr(_base, "MultiOutputLinearModel", None)
        if multi is not None and "predict" in vars(multi):
            known.add(multi.predict)
        if cls.predict not in known or cls._decision_function is not LinearModel._decision_function:
            return None
        return Formula((), weights, intercept, None)
    return None


def _pipeline(pipeline: Any) -> Formula | None:
    """Scalers then a linear model, or None when any step is something else."""
    import inspect

    from sklearn.pipeline import Pipeline

    # predict is a descriptor (available_if): compare what the class holds, not what it gives
    own = inspect.getattr_static(type(pipeline), "predict", None)
    if own is not Pipeline.__dict__.get("predict") or not pipeline.steps:
        return None
    scalers = []
    for _, step in pipeline.steps[:-1]:
        if step is None or step == "passthrough":
            continue
        scale = _standard_scaler(step)
        if scale is None:
            return None
        scalers.append(scale)
    final = _linear(pipeline.steps[-1][1])
    if final is None:
        return None
    return Formula(tuple(scalers), final.weights, final.intercept, final.classes)


def _standard_scaler(step: Any) -> tuple[np.ndarray | None, np.ndarray | None] | None:
    """A fitted StandardScaler's ``(mean, scale)``, or None for another transformer."""
    import numpy as np
    from sklearn.preprocessing import StandardScaler

    if type(step).transform is not StandardScaler.transform or not hasattr(step, "n_features_in_"):
        return None  # another transformer, or not fitted
    mean = getattr(step, "mean_", None) if step.with_mean else None
    scale = getattr(step, "scale_", None) if step.with_std else None
    for wanted, found in ((step.with_mean, mean), (step.with_std, scale)):
        if wanted and not (isinstance(found, np.ndarray) and found.dtype == np.float64):
            return None
    return mean, scale


# -- registration --------------------------------------------------------------------


def numeric_inputs(signature: Signature | None) -> bool:
    """Whether every input of ``signature`` is a number or a boolean (a float matrix)."""
    return signature is not None and all(
        c.type.startswith(("int", "uint", "float", "double", "bool", "halffloat"))
        for c in signature.inputs
    )


def as_matrix(table: pa.Table) -> np.ndarray:
    """A table of numeric columns as a row-major float64 matrix (nulls as NaN)."""
    import numpy as np
    import pyarrow as pa

    try:
        # One C++ call for the whole row-major matrix (nulls as NaN, as to_numpy gives):
        # a tenth of converting the columns one by one (76 -> 6 us for 20 features).
        batch = table.combine_chunks().to_batches()[0]
        matrix = np.asarray(batch.to_tensor(null_to_nan=True))
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError, IndexError):
        matrix = np.column_stack([c.to_numpy() for c in table.columns])
    return matrix.astype(np.float64, copy=False)


def same_answers(fast: Any, slow: Any) -> bool:
    """Whether two predictions agree: labels exactly, floats to the last bits of rounding.
    A frame can reach the estimator in another memory order than the matrix (pandas 3
    gives a column-major array), and a dot product summed in another order can differ in
    its last bit (seen: 3e-17 on a linear model)."""
    import numpy as np

    fast, slow = np.asarray(fast), np.asarray(slow)
    if fast.shape != slow.shape:
        return False
    if fast.dtype.kind == "f" and slow.dtype.kind == "f":
        return bool(np.allclose(fast, slow, rtol=1e-9, atol=1e-12, equal_nan=True))
    return bool(np.array_equal(fast, slow))


def probe_rows(sample: pa.Table) -> pa.Table:
    """Four rows of standard normal values in ``sample``'s column types (seeded)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    return pa.table(
        {
            name: pa.array(rng.normal(size=4)).cast(sample.schema.field(name).type, safe=False)
            for name in sample.column_names
        }
    )


def compile_model(flavor: Any, model: Any, recorded: dict[str, Any] | None) -> bytes | None:
    """The artifact of ``model``'s formula, when it has one that answers as the model
    does on the example rows of its ``recorded`` signature (a version's ``signature``)
    and on random rows, read through ``flavor`` with the signature's outputs conformed,
    the way a version is served; None otherwise (the model is then served by its own
    ``predict``)."""
    import warnings

    from conveyor.registry.flavors import Conformed
    from conveyor.registry.signature import Signature

    if getattr(flavor, "name", None) != "sklearn" or recorded is None:
        return None
    signature = Signature.from_dict(recorded)
    if not numeric_inputs(signature):
        return None
    if signature.outputs:
        flavor = Conformed(flavor, signature.outputs)
    formula = extract(model)
    if formula is None or formula.parameters > MAX_PARAMETERS:
        return None
    sample = signature.example_table(8)
    if sample is None:
        return None
    data = formula.to_bytes()
    if data is None:
        return None
    read_back = Formula.from_bytes(data)  # check what a server will read back
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for rows in (sample, probe_rows(sample)):
                if not same_answers(read_back(as_matrix(rows)), flavor.predict(model, rows)):
                    return None
    except Exception:  # the model wants its frame (a ColumnTransformer by name, ...)
        return None
    return data


def store(artifacts: ArtifactStore, data: bytes) -> dict[str, Any]:
    """Put a formula's artifact into ``artifacts``: what a version records as ``compiled``."""
    ref = artifacts.put(data, media_type="application/x-npz")
    return {"kind": KIND, "digest": ref.digest, "size": ref.size}


# -- the model behind a formula --------------------------------------------------------


class NotOnTheLoop(RuntimeError):
    """A model not loaded yet was asked for on an event loop's thread: loading it
    (unpickling, importing its library) would stall every request the loop serves, so the
    caller must ask again from a worker thread (the batcher does)."""


def _on_a_loop() -> bool:
    """Whether this thread is running an asyncio event loop."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class DeferredModel:
    """A version's model object, unpickled (once, thread-safe) on first use.

    A server answering from a version's formula holds one of these as
    ``LoadedModel.model``: attribute access (``predict``, ``predict_proba``,
    ``classes_``) loads the model through ``load``, then delegates to it. Never on an
    event loop's thread: there the first access raises :class:`NotOnTheLoop`.
    """

    __slots__ = ("_load", "_lock", "_model")

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._model: Any = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def resolve(self) -> Any:
        model = self._model
        if model is None:
            if _on_a_loop():
                raise NotOnTheLoop("the model is not loaded yet; load it off the event loop")
            with self._lock:
                if self._model is None:
                    self._model = self._load()
                model = self._model
        return model

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        return f"DeferredModel({self._model!r})" if self._model is not None else "DeferredModel(-)"
