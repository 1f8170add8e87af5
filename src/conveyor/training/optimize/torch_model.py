"""PyTorch modules: ONNX export (:func:`export_torch_onnx`), magnitude pruning
(:func:`prune_magnitude`) and :class:`TorchPredictor`, which says what
``predict`` means for a module's outputs so :func:`~conveyor.training.optimize.compare`
can measure one.

What a module's outputs mean is stated, never guessed from training code:

- ``task="regression"``: the outputs are the predictions (one output column
  comes back as a 1-D array, as scikit-learn's regressors return it).
- ``task="classification"``: the outputs are logits. With more than one
  output column the label is the argmax and the probabilities the softmax;
  with one column the probability of class 1 is its sigmoid and the label is
  ``sigmoid > 0.5``. Classes are ``0 .. k-1`` (``0, 1`` for one column).
- ``task=None`` (the default): classification when the module gives more than
  one output column, regression when it gives one. A single logit is a
  classifier only when the caller says so.

Example::

    from conveyor.training.optimize import compare, export_torch_onnx, prune_magnitude

    onnx_model = export_torch_onnx(net, X_train)          # X_train: a frame or 2-D array
    pruned = prune_magnitude(net, amount=0.5)
    pruned.overall_sparsity                               # 0.5
    compare(net, pruned.module, X_test, y_test).to_checks()

torch is imported only inside the functions (``pip install 'conveyor[torch]'``).
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import InvalidInputError
from conveyor.training.optimize.onnx_model import (
    _META_KEY,
    _TENSOR_INPUT,
    OnnxModel,
    Signature,
    _all_float,
    _as_table,
    _feeds,
    _numeric_or_fail,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

__all__ = [
    "PruneResult",
    "TorchPredictor",
    "TorchTask",
    "export_torch_onnx",
    "is_torch_module",
    "module_size_bytes",
    "prune_magnitude",
]

TorchTask = Literal["classification", "regression"]
#: Rows of the sample the exporter traces the module with.
_TRACE_ROWS = 16


def is_torch_module(model: Any) -> bool:
    """Whether ``model`` is a ``torch.nn.Module``, without importing torch for other objects."""
    if not any(cls.__module__.split(".")[0] == "torch" for cls in type(model).__mro__):
        return False
    import torch

    return isinstance(model, torch.nn.Module)


def _require_module(module: Any, where: str) -> None:
    if not is_torch_module(module):
        raise InvalidInputError(
            f"{where} takes a torch.nn.Module, got {type(module).__module__}."
            f"{type(module).__qualname__}",
            field="module",
        )


def _check_task(task: Any) -> None:
    if task not in (None, "classification", "regression"):
        raise InvalidInputError(
            f"task is 'classification', 'regression' or None (from the output width), got {task!r}",
            field="task",
        )


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode (dropout off, batch-norm statistics frozen), then as it was."""
    training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(training)


def _outputs(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    import torch

    with evaluating(module), torch.inference_mode():
        out = module(inputs)
    if not isinstance(out, torch.Tensor):
        raise InvalidInputError(
            f"{type(module).__name__} returned a {type(out).__name__}: a module measured or "
            "exported here returns one tensor",
            field="module",
        )
    if out.ndim == 1:
        out = out.reshape(-1, 1)
    if out.ndim != 2:
        raise InvalidInputError(
            f"{type(module).__name__} returned shape {tuple(out.shape)}: expected (rows, outputs)",
            field="module",
        )
    result: torch.Tensor = out
    return result


def _sample_signature(
    sample: Any, input_names: Sequence[str] | None
) -> tuple[tuple[str, ...], np.ndarray]:
    """The sample's column names and its rows as a float32 matrix."""
    import numpy as np

    if is_torch_tensor(sample):
        sample = sample.detach().cpu().numpy()
    if isinstance(sample, np.ndarray):
        if sample.ndim != 2:
            raise InvalidInputError(
                f"the sample must be 2-D, got shape {sample.shape}", field="sample"
            )
        columns = tuple(f"f{i}" for i in range(sample.shape[1]))
        matrix = np.ascontiguousarray(sample, dtype=np.float32)
    else:
        table = _as_table(sample)
        for column in table.column_names:
            _numeric_or_fail(table, column)
        columns = tuple(table.column_names)
        matrix = _feeds(_signature(columns, "regressor", 0, ""), table)[_TENSOR_INPUT]
    if input_names is not None:
        names = tuple(str(n) for n in input_names)
        if len(names) != len(columns) or len(set(names)) != len(names):
            raise InvalidInputError(
                f"input_names needs {len(columns)} distinct names, one per sample column; "
                f"got {list(names)}",
                field="input_names",
            )
        columns = names
    if matrix.shape[0] == 0:
        raise InvalidInputError("the sample has no rows", field="sample")
    return columns, matrix


def is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _signature(columns: tuple[str, ...], task: str, width: int, estimator: str) -> Signature:
    classifier = task == "classifier"
    classes: tuple[Any, ...] = tuple(range(max(width, 2))) if classifier else ()
    return Signature(
        mode="tensor",
        columns=columns,
        types=_all_float(len(columns)),
        task="classifier" if classifier else "regressor",
        has_proba=classifier,
        classes=classes,
        estimator=estimator,
    )


def _resolve_task(task: TorchTask | None, width: int) -> TorchTask:
    if task is not None:
        return task
    return "classification" if width > 1 else "regression"


def _classifier_head(module: nn.Module, width: int) -> nn.Module:
    """``module`` followed by (label, probabilities), the outputs skl2onnx gives a classifier,
    and the module's own logits, which the registry serves when the parent served them."""
    import torch

    class ClassifierHead(torch.nn.Module):
        # The width is fixed here, not tested in forward: the exporter traces
        # forward, and a Python branch on a traced shape would be baked in with a warning.
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.width = width

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            logits = self.inner(x).reshape(-1, self.width)
            if self.width == 1:
                positive = torch.sigmoid(logits)
                proba = torch.cat([1 - positive, positive], dim=1)
                return (positive > 0.5).reshape(-1).to(torch.int64), proba, logits
            return torch.argmax(logits, dim=1), torch.softmax(logits, dim=1), logits

    head = ClassifierHead(module)
    if isinstance(module, torch.jit.ScriptModule):
        # A registry-loaded TorchScript module cannot be traced from a plain module
        # around it; scripted together, the exporter takes both.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates jit
            scripted: nn.Module = torch.jit.script(head)
        return scripted
    return head


def export_torch_onnx(
    module: nn.Module,
    sample: Any,
    *,
    input_names: Sequence[str] | None = None,
    target_opset: int | None = None,
    task: TorchTask | None = None,
) -> OnnxModel:
    """Convert ``module`` to ONNX: an :class:`OnnxModel` like :func:`export_onnx` gives.

    ``sample`` (a frame, Arrow table, 2-D numpy array or tensor of numbers)
    gives the input columns; its first rows are traced. The graph takes one
    float32 input ``X`` of shape ``[batch, n_columns]`` with a dynamic batch
    axis. ``input_names`` names the columns (default: the frame's column
    names, or ``f0 .. fn-1`` for an array); a frame given to ``predict`` is
    read by those names. ``task`` is as in the module docstring: a classifier
    is exported with a label and a probability output, so its
    :meth:`OnnxModel.predict_proba` and :meth:`~OnnxModel.predict` work as for
    scikit-learn; a regressor's graph returns the module's outputs.

    PyTorch 2.13 exports through its TorchScript-based exporter (the
    ``torch.export`` one needs the onnxscript package); the deprecation
    warnings it raises are silenced around the call only.
    """
    import onnx
    import torch

    _require_module(module, "export_torch_onnx")
    _check_task(task)
    columns, matrix = _sample_signature(sample, input_names)
    inputs = torch.from_numpy(matrix[:_TRACE_ROWS].copy())
    try:
        width = int(_outputs(module, inputs).shape[1])
    except (RuntimeError, TypeError) as exc:  # a shape mismatch inside the module
        raise InvalidInputError(
            f"{type(module).__name__} cannot run on the sample's {len(columns)} columns: {exc}",
            field="sample",
        ) from exc
    resolved = _resolve_task(task, width)
    name = type(module).__name__
    signature = _signature(
        columns, "classifier" if resolved == "classification" else "", width, name
    )
    graph = _classifier_head(module, width) if resolved == "classification" else module
    outputs = ["label", "probabilities", "logits"] if resolved == "classification" else ["Y"]
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-torch-onnx-") as folder,
        evaluating(module),
        warnings.catch_warnings(),
    ):
        # The TorchScript-based exporter announces its own deprecation on every call.
        warnings.simplefilter("ignore", DeprecationWarning)
        target = Path(folder, "model.onnx")
        try:
            torch.onnx.export(
                graph,
                (inputs,),
                target,
                input_names=[_TENSOR_INPUT],
                output_names=outputs,
                dynamic_axes={n: {0: "batch"} for n in [_TENSOR_INPUT, *outputs]},
                opset_version=target_opset,
                dynamo=False,
            )
        except (RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidInputError(
                f"torch.onnx could not export {name}: {first}", estimator=name
            ) from exc
        proto = onnx.load(target)
    entry = proto.metadata_props.add()
    entry.key = _META_KEY
    entry.value = signature.to_json()
    return OnnxModel(proto.SerializeToString(), notes=(f"exported from torch {name}",))


@dataclass(frozen=True, slots=True)
class PruneResult:
    """A pruned copy of a module and how sparse it came out.

    ``sparsity`` maps each pruned layer (by its name in ``named_modules``) to
    the share of its weights that are zero; ``overall_sparsity`` is the share
    over all of them. The zeros are stored densely: the module is no smaller
    and no faster on dense kernels until it is stored or run sparse.
    """

    module: nn.Module
    amount: float
    sparsity: dict[str, float]
    overall_sparsity: float
    notes: tuple[str, ...] = field(default=())


def prune_magnitude(
    module: nn.Module,
    amount: float = 0.5,
    *,
    layers: Sequence[type[nn.Module]] | None = None,
) -> PruneResult:
    """Zero the ``amount`` share of weights with the smallest magnitude, across layers.

    Global unstructured L1 pruning (``torch.nn.utils.prune.global_unstructured``)
    over the ``weight`` of every submodule of a type in ``layers`` (default
    ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d``; biases are kept), made
    permanent with ``prune.remove``, on a deep copy: ``module`` is unchanged.
    """
    import torch
    from torch.nn.utils import prune

    _require_module(module, "prune_magnitude")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 <= amount <= 1:
        raise InvalidInputError(
            f"amount is the share of weights to zero, from 0 to 1; got {amount!r}", field="amount"
        )
    kinds = tuple(layers) if layers is not None else _default_layers()
    if not kinds or not all(isinstance(k, type) and issubclass(k, torch.nn.Module) for k in kinds):
        raise InvalidInputError(
            f"layers is a sequence of torch.nn.Module classes, got {layers!r}", field="layers"
        )
    if isinstance(module, torch.jit.ScriptModule):
        return _prune_script(module, float(amount))
    pruned = copy.deepcopy(module)
    targets = [
        (name, sub)
        for name, sub in pruned.named_modules()
        if isinstance(sub, kinds) and isinstance(getattr(sub, "weight", None), torch.Tensor)
    ]
    if not targets:
        raise InvalidInputError(
            f"{type(module).__name__} has no {'/'.join(k.__name__ for k in kinds)} layer "
            "with a weight to prune",
            field="layers",
        )
    prune.global_unstructured(
        [(sub, "weight") for _, sub in targets],
        pruning_method=prune.L1Unstructured,
        amount=float(amount),
    )
    sparsity: dict[str, float] = {}
    zeros = total = 0
    for name, sub in targets:
        prune.remove(sub, "weight")  # type: ignore[no-untyped-call]
        weight: torch.Tensor = getattr(sub, "weight").detach()  # noqa: B009
        layer_zeros, layer_total = int((weight == 0).sum()), weight.numel()
        sparsity[name or type(sub).__name__] = layer_zeros / layer_total
        zeros, total = zeros + layer_zeros, total + layer_total
    overall = zeros / total
    note = (
        f"global L1 magnitude pruning: {zeros} of {total} weights zero ({overall:.1%}) "
        f"in {len(targets)} layer(s), stored dense"
    )
    return PruneResult(pruned, float(amount), sparsity, overall, (note,))


def _prune_script(module: torch.jit.ScriptModule, amount: float) -> PruneResult:
    """The same global L1 pruning on a TorchScript module (as the registry loads one).

    Scripted submodules are not ``nn.Linear`` instances, so the layers are
    found by their weights: every parameter named ``*weight`` with two or
    more dimensions (linear and convolution kernels; norms and biases are
    1-D). The copy goes through ``torch.jit.save``/``load``.
    """
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, buffer)
        buffer.seek(0)
        pruned = torch.jit.load(buffer)  # type: ignore[no-untyped-call]
    weights = [
        (name, p)
        for name, p in pruned.named_parameters()
        if name.endswith("weight") and p.dim() >= 2
    ]
    if not weights:
        raise InvalidInputError(
            f"{type(module).__name__} has no linear or convolution weight to prune",
            field="layers",
        )
    magnitudes = torch.cat([p.detach().abs().reshape(-1) for _, p in weights])
    count = round(amount * magnitudes.numel())
    sparsity: dict[str, float] = {}
    zeros = total = 0
    with torch.no_grad():
        if count:
            # The count-th smallest magnitude; ties at it are pruned too, as in L1Unstructured.
            threshold = torch.kthvalue(magnitudes, count).values
            for _, p in weights:
                p.masked_fill_(p.abs() <= threshold, 0.0)
        for name, p in weights:
            layer_zeros, layer_total = int((p == 0).sum()), p.numel()
            sparsity[name.removesuffix(".weight")] = layer_zeros / layer_total
            zeros, total = zeros + layer_zeros, total + layer_total
    overall = zeros / total
    note = (
        f"global L1 magnitude pruning (TorchScript): {zeros} of {total} weights zero "
        f"({overall:.1%}) in {len(weights)} layer(s), stored dense"
    )
    return PruneResult(pruned, amount, sparsity, overall, (note,))


def _default_layers() -> tuple[type[nn.Module], ...]:
    from torch import nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d)


def module_size_bytes(module: nn.Module) -> int:
    """Bytes of the module as saved: ``torch.jit.save`` for TorchScript, else ``torch.save``."""
    import torch

    buffer = io.BytesIO()
    if isinstance(module, torch.jit.ScriptModule):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module, buffer)
    else:
        torch.save(module, buffer)
    return len(buffer.getvalue())


@dataclass(eq=False)
class TorchPredictor:
    """A module and its task: what ``predict`` and ``predict_proba`` mean for its outputs.

    Build one with :meth:`of` (it resolves ``task=None`` from the output width
    on the first row). The module runs in eval mode under
    ``torch.inference_mode()`` on a float32 tensor of the columns, in the
    order ``columns`` gives (a frame's own order when None).
    """

    module: nn.Module
    task: TorchTask
    width: int
    columns: tuple[str, ...] | None = None
    notes: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        module: nn.Module,
        X: Any,
        task: TorchTask | None = None,
        *,
        columns: Sequence[str] | None = None,
        notes: Sequence[str] = (),
    ) -> TorchPredictor:
        """A predictor for ``module``; ``X`` is any input it takes, to find the output width."""
        _require_module(module, "TorchPredictor")
        _check_task(task)
        names = tuple(columns) if columns is not None else None
        probe = cls(module, "regression", 0, names)
        width = int(probe.outputs(_head(X, 1)).shape[1])
        return cls(module, _resolve_task(task, width), width, names, tuple(notes))

    @property
    def name(self) -> str:
        return f"{type(self.module).__name__} (torch)"

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"

    @property
    def classes(self) -> tuple[int, ...] | None:
        return tuple(range(max(self.width, 2))) if self.is_classifier else None

    def tensor(self, X: Any) -> torch.Tensor:
        """``X`` (a frame, Arrow table, 2-D array or tensor) as a float32 tensor."""
        import numpy as np
        import torch

        if is_torch_tensor(X):
            result: torch.Tensor = X.detach().to(torch.float32)
            return result
        if isinstance(X, np.ndarray):
            if X.ndim != 2:
                raise InvalidInputError(f"expected a 2-D array, got shape {X.shape}", field="X")
            # A copy: from_numpy warns on a read-only array (pandas' copy-on-write views).
            return torch.from_numpy(np.array(X, dtype=np.float32))
        table = _as_table(X)
        columns = self.columns or tuple(table.column_names)
        signature = _signature(columns, "regressor", 0, type(self.module).__name__)
        return torch.from_numpy(_feeds(signature, table)[_TENSOR_INPUT])

    def outputs(self, X: Any) -> torch.Tensor:
        return _outputs(self.module, self.tensor(X))

    def run(self, inputs: torch.Tensor) -> torch.Tensor:
        """The module on an already-built tensor (what the latency measure times)."""
        import torch

        with torch.inference_mode():
            result: torch.Tensor = self.module(inputs)
        return result

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Eval mode on one torch thread, as a server with one model per worker runs it."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with evaluating(self.module):
                yield
        finally:
            torch.set_num_threads(threads)

    def predict(self, X: Any) -> np.ndarray:
        """Labels for a classifier (argmax, or ``sigmoid > 0.5`` for one logit), else outputs."""
        import numpy as np
        import torch

        out = self.outputs(X)
        if not self.is_classifier:
            values = out.numpy()
            return values.ravel() if values.shape[1] == 1 else values
        if out.shape[1] == 1:
            labels: np.ndarray = (torch.sigmoid(out) > 0.5).reshape(-1).numpy()
            return labels.astype(np.int64)
        return out.argmax(dim=1).numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: the softmax, or ``[1 - sigmoid, sigmoid]`` for one logit."""
        import numpy as np

        if not self.is_classifier:
            raise InvalidInputError(
                f"{self.name} is measured as a regressor: it has no class probabilities "
                "(pass task='classification' if its outputs are logits)",
                field="task",
            )
        import torch

        out = self.outputs(X)
        if out.shape[1] == 1:
            positive = torch.sigmoid(out)
            out = torch.cat([1 - positive, positive], dim=1)
        else:
            out = torch.softmax(out, dim=1)
        return np.asarray(out.numpy(), dtype=np.float64)


def _head(X: Any, count: int) -> Any:
    if hasattr(X, "iloc"):
        return X.iloc[:count]
    if hasattr(X, "slice"):  # Arrow table, polars frame
        return X.slice(0, count)
    return X[:count]
