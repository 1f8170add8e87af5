"""scikit-learn to ONNX: :func:`export_onnx` and the :class:`OnnxModel` it returns.

The input signature is taken from the sample frame and written into the ONNX
file's metadata, so an :class:`OnnxModel` rebuilt from its bytes alone (as the
registry will load it) knows how to turn a frame into the graph's inputs:

- ``tensor`` mode (every estimator and pipeline except those below): one
  float32 input ``X`` of shape ``[None, n_features]``; the frame's columns are
  picked by name in training order (``feature_names_in_`` when the model was
  fitted on a DataFrame, otherwise the sample's column order), so the order of
  the columns of a frame given to ``predict`` does not matter.
- ``columns`` mode (a ``ColumnTransformer``, or a ``Pipeline`` that starts
  with one): one named input per column of shape ``[None, 1]``, float32,
  int64 or string after the sample's column type, because a ColumnTransformer
  selects columns by name and mixes numbers with categories.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import InvalidInputError, NotFittedError

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime as ort
    import pyarrow as pa

__all__ = ["OnnxModel", "Signature", "export_onnx"]

InputMode = Literal["tensor", "columns"]
Task = Literal["classifier", "regressor"]
ColumnType = Literal["float", "int64", "string"]
_META_KEY = "conveyor.signature"
_TENSOR_INPUT = "X"
#: Probabilities closer than this to the highest count as a tie (float32 rounding).
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True, slots=True)
class Signature:
    """What the graph takes and gives: how a frame maps onto its inputs."""

    mode: InputMode
    columns: tuple[str, ...]
    types: tuple[ColumnType, ...]
    task: Task
    has_proba: bool
    classes: tuple[Any, ...] = ()
    estimator: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "mode": self.mode,
                "columns": list(self.columns),
                "types": list(self.types),
                "task": self.task,
                "has_proba": self.has_proba,
                "classes": list(self.classes),
                "estimator": self.estimator,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Signature:
        data = json.loads(text)
        return cls(
            mode=data["mode"],
            columns=tuple(data["columns"]),
            types=tuple(data["types"]),
            task=data["task"],
            has_proba=bool(data["has_proba"]),
            classes=tuple(data.get("classes", ())),
            estimator=data.get("estimator", ""),
        )


@dataclass(eq=False)
class OnnxModel:
    """ONNX bytes plus an ONNX Runtime session that predicts like scikit-learn.

    The session uses ``intra_op_threads`` threads (one by default, as a
    server running one model per worker would; 0 lets ONNX Runtime use every
    core). It pickles as its bytes and options, and a fresh session is
    created on unpickling. ``notes`` and
    ``quantized_weights`` are set by the optimizations that produced the model
    and flow into its :class:`~conveyor.training.optimize.OptimizationReport`.
    """

    data: bytes
    intra_op_threads: int = 1
    notes: tuple[str, ...] = ()
    quantized_weights: int | None = None
    signature: Signature = field(init=False)
    session: ort.InferenceSession = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        if not isinstance(self.data, bytes | bytearray) or not self.data:
            raise InvalidInputError("an OnnxModel needs the non-empty bytes of an ONNX file")
        self.data = bytes(self.data)
        threads = self.intra_op_threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise InvalidInputError(
                f"intra_op_threads is a count of threads (0 for all cores), got {threads!r}",
                field="intra_op_threads",
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                self.data, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped Fail/InvalidGraph errors
            raise InvalidInputError(f"ONNX Runtime cannot load this model: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map.get(_META_KEY)
        if meta is None:
            raise InvalidInputError(
                f"this ONNX model has no {_META_KEY!r} metadata: export it with export_onnx"
            )
        self.signature = Signature.from_json(meta)

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    def __reduce__(self) -> tuple[Any, ...]:
        # An InferenceSession does not pickle; the bytes rebuild it.
        return (
            OnnxModel,
            (self.data, self.intra_op_threads, self.notes, self.quantized_weights),
        )

    def __repr__(self) -> str:
        sig = self.signature
        return (
            f"OnnxModel({sig.estimator or 'model'}, {sig.task}, {sig.mode} input, "
            f"{len(sig.columns)} columns, {self.size_bytes} bytes)"
        )

    def feeds(self, frame: Any) -> dict[str, np.ndarray]:
        """The graph's inputs for ``frame`` (a DataFrame, Arrow table or 2-D array)."""
        return _feeds(self.signature, frame)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        outputs: list[np.ndarray] = self.session.run(None, feeds)
        return outputs

    def predict(self, frame: Any) -> np.ndarray:
        """Labels for a classifier, values for a regressor, shaped as scikit-learn's.

        A classifier's label is the first class whose probability is within
        ``TIE_TOLERANCE`` of the highest: scikit-learn breaks an exact tie (a
        forest split 25/25) toward the first class, and float32 arithmetic in
        the graph turns such a tie into 0.49999994 against 0.50000006.
        """
        import numpy as np

        outputs = self.run(self.feeds(frame))
        result = outputs[0]
        sig = self.signature
        if sig.task == "classifier" and sig.has_proba and sig.classes:
            proba = outputs[1]
            near_best = proba >= proba.max(axis=1, keepdims=True) - TIE_TOLERANCE
            labels: np.ndarray = np.asarray(sig.classes)[np.argmax(near_best, axis=1)]
            return labels
        if self.signature.task == "regressor" and result.ndim == 2 and result.shape[1] == 1:
            return result.ravel()
        return result

    def predict_proba(self, frame: Any) -> np.ndarray:
        """Class probabilities, ``(n_rows, n_classes)`` in the order of ``classes``."""
        if not self.signature.has_proba:
            raise InvalidInputError(
                f"{self.signature.estimator or 'this model'} is a {self.signature.task} "
                "without predict_proba: it has no class probabilities"
            )
        return self.run(self.feeds(frame))[1]


def export_onnx(model: Any, sample: Any, *, target_opset: int | None = None) -> OnnxModel:
    """Convert a fitted scikit-learn classifier, regressor or pipeline to ONNX.

    ``sample`` (a pandas/polars DataFrame, Arrow table or 2-D numpy array) gives
    the input signature; see the module docstring for the two input modes.
    Unsupported estimators raise :class:`InvalidInputError` naming the
    estimator and why.
    """
    import numpy as np
    from sklearn.base import is_classifier, is_regressor
    from sklearn.exceptions import NotFittedError as SklearnNotFitted
    from sklearn.utils.validation import check_is_fitted

    name = type(model).__name__
    if not hasattr(model, "fit") or not hasattr(model, "predict"):
        raise InvalidInputError(
            f"export_onnx converts scikit-learn estimators with fit and predict; got {name}",
            estimator=name,
        )
    try:
        check_is_fitted(model)
    except SklearnNotFitted as exc:
        raise NotFittedError(f"{name} is not fitted: fit it before export", estimator=name) from exc
    task: Task
    if is_classifier(model):
        task = "classifier"
    elif is_regressor(model):
        task = "regressor"
    else:
        raise InvalidInputError(
            f"{name} is neither a classifier nor a regressor: export_onnx exports models "
            "that predict (a transformer or clusterer has no predict contract to keep)",
            estimator=name,
        )
    _require_converters(model)
    mode: InputMode = "columns" if _starts_with_column_transformer(model) else "tensor"
    columns, types = _sample_signature(model, sample, mode)
    # hasattr is False when a Pipeline's last step lacks predict_proba (available_if).
    has_proba = task == "classifier" and hasattr(model, "predict_proba")
    classes = tuple(np.asarray(getattr(model, "classes_", ())).tolist())
    signature = Signature(mode, columns, types, task, has_proba, classes, name)
    proto = _convert(model, signature, target_opset)
    entry = proto.metadata_props.add()
    entry.key = _META_KEY
    entry.value = signature.to_json()
    return OnnxModel(proto.SerializeToString())


def _convert(model: Any, signature: Signature, target_opset: int | None) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    kinds = {"float": FloatTensorType, "int64": Int64TensorType, "string": StringTensorType}
    if signature.mode == "tensor":
        initial = [(_TENSOR_INPUT, FloatTensorType([None, len(signature.columns)]))]
    else:
        initial = [
            (column, kinds[kind]([None, 1]))
            for column, kind in zip(signature.columns, signature.types, strict=True)
        ]
    # zipmap=False: probabilities as one (n, k) tensor, as predict_proba returns them.
    options = {"zipmap": False} if signature.task == "classifier" else None
    try:
        return convert_sklearn(
            model, initial_types=initial, options=options, target_opset=target_opset
        )
    except (
        RuntimeError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        NotImplementedError,
    ) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(
            f"skl2onnx could not convert {signature.estimator}: {first}",
            estimator=signature.estimator,
        ) from exc


def _walk(model: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every estimator inside ``model`` with where it sits, outermost first."""
    here = path or type(model).__name__
    yield here, model
    steps: Sequence[tuple[str, Any]] = ()
    if hasattr(model, "steps"):
        steps = [(n, s) for n, s in model.steps]
    elif hasattr(model, "transformers_"):
        steps = [(n, s) for n, s, _cols in model.transformers_]
    elif hasattr(model, "transformer_list"):
        steps = list(model.transformer_list)
    for step_name, step in steps:
        if step is None or isinstance(step, str):  # "drop" / "passthrough"
            continue
        yield from _walk(step, f"{here}[{step_name!r}]")


def _require_converters(model: Any) -> None:
    import skl2onnx
    from skl2onnx._supported_operators import sklearn_operator_name_map

    for where, estimator in _walk(model):
        if type(estimator) not in sklearn_operator_name_map:
            name = type(estimator).__name__
            place = "" if where == name else f" (at {where})"
            raise InvalidInputError(
                f"{name}{place} has no ONNX converter in skl2onnx {skl2onnx.__version__}: "
                "export a supported estimator or register a converter with "
                "skl2onnx.update_registered_converter",
                estimator=name,
                where=where,
            )


def _starts_with_column_transformer(model: Any) -> bool:
    from sklearn.compose import ColumnTransformer

    first = model.steps[0][1] if hasattr(model, "steps") else model
    return isinstance(first, ColumnTransformer)


def _sample_signature(
    model: Any, sample: Any, mode: InputMode
) -> tuple[tuple[str, ...], tuple[ColumnType, ...]]:
    import numpy as np

    names = getattr(model, "feature_names_in_", None)
    if isinstance(sample, np.ndarray):
        if mode == "columns":
            raise InvalidInputError(
                "this model starts with a ColumnTransformer: give a sample frame with named "
                "columns, not a numpy array",
                field="sample",
            )
        if sample.ndim != 2:
            raise InvalidInputError(
                f"the sample must be 2-D, got shape {sample.shape}", field="sample"
            )
        columns = (
            tuple(str(n) for n in names)
            if names is not None
            else tuple(f"f{i}" for i in range(sample.shape[1]))
        )
        _check_width(model, len(columns))
        return columns, _all_float(len(columns))
    table = _as_table(sample)
    if names is not None:
        columns = tuple(str(n) for n in names)
        _require_columns(table, columns)
    else:
        columns = tuple(table.column_names)
    _check_width(model, len(columns))
    if mode == "tensor":
        for column in columns:
            _numeric_or_fail(table, column)
        return columns, _all_float(len(columns))
    return columns, tuple(_column_type(table, column) for column in columns)


def _all_float(count: int) -> tuple[ColumnType, ...]:
    kind: ColumnType = "float"
    return (kind,) * count


def _check_width(model: Any, width: int) -> None:
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and expected != width:
        raise InvalidInputError(
            f"{type(model).__name__} was fitted on {expected} features; the sample has {width}",
            field="sample",
        )


def _as_table(frame: Any) -> pa.Table:
    from conveyor.data.frames import to_arrow

    return to_arrow(frame)


def _require_columns(table: pa.Table, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"the frame lacks the model's input column(s) {missing}", field=missing[0]
        )


def _numeric_or_fail(table: pa.Table, column: str) -> None:
    import pyarrow as pa

    kind = table.schema.field(column).type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise InvalidInputError(
            f"column {column!r} is {kind}: a model with one float tensor input takes numbers "
            "only (encode it in a ColumnTransformer to export it with named inputs)",
            field=column,
        )


def _column_type(table: pa.Table, column: str) -> ColumnType:
    import pyarrow as pa

    kind = table.schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return "float"
    if pa.types.is_integer(kind):
        return "int64"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    raise InvalidInputError(
        f"column {column!r} is {kind}: ONNX inputs are numbers or strings", field=column
    )


def _feeds(signature: Signature, frame: Any) -> dict[str, np.ndarray]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(frame, np.ndarray):
        if signature.mode == "columns":
            raise InvalidInputError(
                f"{signature.estimator} takes named columns {list(signature.columns)}: "
                "give a frame, not a numpy array",
                field="frame",
            )
        if frame.ndim != 2 or frame.shape[1] != len(signature.columns):
            raise InvalidInputError(
                f"expected a 2-D array with {len(signature.columns)} columns, "
                f"got shape {frame.shape}",
                field="frame",
            )
        return {_TENSOR_INPUT: np.ascontiguousarray(frame, dtype=np.float32)}
    table = _as_table(frame)
    _require_columns(table, signature.columns)
    if signature.mode == "tensor":
        matrix = np.empty((table.num_rows, len(signature.columns)), dtype=np.float32)
        for i, column in enumerate(signature.columns):
            _numeric_or_fail(table, column)
            matrix[:, i] = pc.cast(table.column(column), pa.float32()).to_numpy()
        return {_TENSOR_INPUT: matrix}
    feeds: dict[str, np.ndarray] = {}
    for column, kind in zip(signature.columns, signature.types, strict=True):
        values = table.column(column)
        if pa.types.is_dictionary(values.type):
            values = pc.cast(values, values.type.value_type)
        if kind != "float" and values.null_count:
            raise InvalidInputError(
                f"column {column!r} has {values.null_count} missing value(s); the ONNX graph "
                f"takes {kind} values only",
                field=column,
            )
        if kind == "float":
            array = pc.cast(values, pa.float32()).to_numpy()
        elif kind == "int64":
            array = pc.cast(values, pa.int64()).to_numpy()
        else:
            array = np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)
        feeds[column] = array.reshape(-1, 1)
    return feeds
