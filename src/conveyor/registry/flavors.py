"""Flavors: how a kind of model is saved to bytes, loaded back and asked for predictions.

The flavor is chosen from the model object's type (:func:`flavor_for`), and
its name is stored with the version so :func:`get_flavor` finds the loader.
Library modules are imported only inside the functions that need them, so
importing this module (or ``conveyor.registry``) loads no ML library, and a
flavor whose library is not installed is simply never chosen.

Each flavor records the versions of the libraries its artifact depends on;
:func:`check_libraries` compares them with what is installed at load and
warns (:class:`LibraryVersionWarning`) on a mismatch, as scikit-learn does
for its own pickles.
"""

from __future__ import annotations

import functools
import io
import json
import pickle
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from conveyor._names import NameTable
from conveyor.errors import InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.data.frames import FrameKind
    from conveyor.registry.outputs import Output

__all__ = [
    "FLAVORS",
    "Conformed",
    "Flavor",
    "LibraryVersionWarning",
    "PythonModel",
    "TorchFlavor",
    "check_libraries",
    "flavor_for",
    "get_flavor",
    "installed_version",
]


class LibraryVersionWarning(UserWarning):
    """A model is loaded with a library version other than the one it was saved with."""


class PythonModel(ABC):
    """Base class for any model Conveyor has no dedicated flavor for.

    Subclass it and implement :meth:`predict`; the instance is pickled, so
    its class must be importable where the model is loaded.
    """

    #: The kind of frame :meth:`predict` receives: "pandas", "polars" or "arrow".
    frame_kind: ClassVar[str] = "pandas"

    @abstractmethod
    def predict(self, frame: Any) -> Any:
        """Predictions for ``frame`` (of kind :attr:`frame_kind`)."""


class Flavor(Protocol):
    """What the registry needs from a kind of model."""

    name: str

    def matches(self, model: Any) -> bool: ...

    def save(self, model: Any) -> bytes: ...

    def load(self, data: bytes) -> Any: ...

    def predict(self, model: Any, table: pa.Table) -> Any: ...

    def libraries(self) -> dict[str, str]: ...


@functools.cache
def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (cached: reading metadata costs ~1 ms)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _versions(*distributions: str) -> dict[str, str]:
    found = {d: installed_version(d) for d in distributions}
    return {d: v for d, v in found.items() if v is not None}


def _from_module(model: Any, *prefixes: str) -> bool:
    """Whether ``model``'s class, or one of its bases, comes from one of the packages."""
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if root in prefixes:
            return True
    return False


def _pickle_dumps(model: Any) -> bytes:
    # Plain pickle, protocol 5: as compact as joblib for NumPy arrays and several
    # times faster for small models (joblib's wrapper costs ~1.5 ms a dump).
    return pickle.dumps(model, protocol=5)


def _pickle_loads(data: bytes) -> Any:
    return pickle.loads(data)  # the artifact's sha256 was verified before


def _pandas(table: pa.Table) -> Any:
    return table.to_pandas()


class _PickledFlavor:
    """A model from ``module``'s library, pickled, predicting from a pandas frame."""

    name: str
    module: ClassVar[str]
    library: ClassVar[str]

    def matches(self, model: Any) -> bool:
        return _from_module(model, self.module)

    def save(self, model: Any) -> bytes:
        return _pickle_dumps(model)

    def load(self, data: bytes) -> Any:
        return _pickle_loads(data)

    def predict(self, model: Any, table: pa.Table) -> Any:
        return model.predict(_pandas(table))

    def libraries(self) -> dict[str, str]:
        return _versions(self.library, "numpy")


class SklearnFlavor(_PickledFlavor):
    """scikit-learn estimators and pipelines, pickled."""

    name, module, library = "sklearn", "sklearn", "scikit-learn"


class XGBoostFlavor(_PickledFlavor):
    """XGBoost's scikit-learn wrappers and boosters."""

    name, module, library = "xgboost", "xgboost", "xgboost"

    def predict(self, model: Any, table: pa.Table) -> Any:
        import xgboost

        if isinstance(model, xgboost.Booster):
            return model.predict(xgboost.DMatrix(_pandas(table)))
        return super().predict(model, table)


class LightGBMFlavor(_PickledFlavor):
    """LightGBM's scikit-learn wrappers and boosters."""

    name, module, library = "lightgbm", "lightgbm", "lightgbm"


class ONNXFlavor:
    """An ``onnx.ModelProto``, run with ONNX Runtime.

    A graph with one input takes all columns as one float32 matrix (what
    skl2onnx produces); a graph with several takes one column per input, by name.
    """

    name = "onnx"

    def matches(self, model: Any) -> bool:
        return type(model).__name__ == "ModelProto" and _from_module(model, "onnx")

    def save(self, model: Any) -> bytes:
        data: bytes = model.SerializeToString()
        return data

    def load(self, data: bytes) -> Any:
        try:
            import onnxruntime
        except ImportError as exc:
            raise MissingDependencyError(
                "loading an ONNX model needs onnxruntime: pip install onnxruntime",
                package="onnxruntime",
            ) from exc
        return onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])

    def predict(self, model: Any, table: pa.Table) -> Any:
        return self.run(model, table)[0]

    def predict_as(self, model: Any, table: pa.Table, outputs: Sequence[Output]) -> Any:
        """The graph's answer read as the output signature ``outputs`` says.

        A classifier's graph answers labels and probabilities (and a PyTorch
        export its logits too): the output the signature describes is chosen,
        labels for a label model, ``logits`` (else the probabilities) for one
        answering k numbers per row; then it is shaped and typed like it
        (``(n, 1)`` to ``(n,)``, float32 to float64).
        """
        from conveyor.registry.outputs import conform, fits

        found = self.run(model, table)
        if len(outputs) != 1 or len(found) == 1:
            return conform(found[0], outputs)
        want = outputs[0]
        names = [o.name for o in model.get_outputs()]
        order = sorted(range(len(found)), key=lambda i: names[i] != "logits")
        for i in order:
            if fits(found[i], want):
                return conform(found[i], outputs)
        return conform(found[0], outputs)  # the error names what the first output holds

    def run(self, model: Any, table: pa.Table) -> list[Any]:
        """Every output of the graph for ``table``, in the graph's order."""
        import numpy as np

        inputs = model.get_inputs()
        if len(inputs) == 1:
            columns = [
                table.column(i).to_numpy(zero_copy_only=False) for i in range(table.num_columns)
            ]
            matrix = np.column_stack(columns).astype(_numpy_type(inputs[0].type))
            feeds = {inputs[0].name: matrix}
        else:
            missing = [i.name for i in inputs if i.name not in table.column_names]
            if missing:
                raise InvalidInputError(
                    f"the ONNX model needs input column {missing[0]!r}", field=missing[0]
                )
            feeds = {
                i.name: table.column(i.name)
                .to_numpy(zero_copy_only=False)
                .astype(_numpy_type(i.type))
                .reshape(-1, 1)
                for i in inputs
            }
        found: list[Any] = model.run(None, feeds)
        return found

    def libraries(self) -> dict[str, str]:
        return _versions("onnx", "onnxruntime")


_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(string)": "object",
    "tensor(bool)": "bool",
}


def _numpy_type(onnx_type: str) -> str:
    return _ONNX_TYPES.get(onnx_type, "float32")


class TorchFlavor:
    """A ``torch.nn.Module``: TorchScript when it scripts, else the pickled module.

    TorchScript keeps the code with the weights, so the module loads where its
    class cannot be imported (a serving image without the training code);
    a module that does not script (Python that TorchScript cannot compile) is
    saved with ``torch.save`` and needs its class importable at load. The
    artifact starts with a header line saying which (:data:`TORCH_MAGIC`, then
    ``{"format": "torchscript" | "pickle", ...}``). It loads on CPU in eval
    mode; :meth:`predict` runs it under ``torch.inference_mode()`` on a float32
    tensor of the signature's columns, in order, and returns its output as a
    numpy array, unchanged: logits stay logits (see
    ``conveyor.training.optimize.torch_model`` for labels).

    PyTorch 2.13 marks ``torch.jit`` deprecated; its warnings are silenced
    around these calls only, and a PyTorch without ``torch.jit.script`` gets
    the pickled module.
    """

    name = "pytorch"

    def matches(self, model: Any) -> bool:
        # By module name first: an object whose classes do not come from torch
        # is not a torch module, and torch stays unimported.
        if not _from_module(model, "torch"):
            return False
        import torch

        return isinstance(model, torch.nn.Module)

    def save(self, model: Any) -> bytes:
        import torch

        buffer = io.BytesIO()
        kind = "torchscript"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(torch.jit.script(model), buffer)
        except Exception:  # TorchScript fails with many error types on unscriptable Python
            kind, buffer = "pickle", io.BytesIO()
            torch.save(model, buffer)
        header = {"format": kind, "class": f"{type(model).__module__}.{type(model).__qualname__}"}
        return TORCH_MAGIC + json.dumps(header).encode() + b"\n" + buffer.getvalue()

    def load(self, data: bytes) -> Any:
        try:
            import torch
        except ImportError as exc:
            raise MissingDependencyError(
                "loading a PyTorch model needs torch: pip install 'conveyor[torch]'",
                package="torch",
            ) from exc
        header, body = _torch_header(data)
        source = io.BytesIO(body)
        if header["format"] == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(source, map_location="cpu")  # type: ignore[no-untyped-call]
        else:
            # A whole module is a pickle of its class; the artifact's sha256 was verified.
            module = torch.load(source, map_location="cpu", weights_only=False)
        return module.eval()

    def predict(self, model: Any, table: pa.Table) -> Any:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import torch

        matrix = np.empty((table.num_rows, table.num_columns), dtype=np.float32)
        for i, column in enumerate(table.column_names):
            try:
                values = pc.cast(table.column(i), pa.float32())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInputError(
                    f"column {column!r} is {table.schema.field(i).type}: a PyTorch model "
                    "takes numbers only",
                    field=column,
                ) from exc
            matrix[:, i] = values.to_numpy(zero_copy_only=False)
        with torch.inference_mode():
            output = model(torch.from_numpy(matrix))
        return output.numpy()

    def libraries(self) -> dict[str, str]:
        return _versions("torch", "numpy")


#: First bytes of a PyTorch artifact, before its JSON header line.
TORCH_MAGIC = b"conveyor-torch/1\n"


def _torch_header(data: bytes) -> tuple[dict[str, Any], bytes]:
    end = data.find(b"\n", len(TORCH_MAGIC))
    header: Any = None
    if data.startswith(TORCH_MAGIC) and end > 0:
        try:
            header = json.loads(data[len(TORCH_MAGIC) : end])
        except ValueError:
            header = None
    if not isinstance(header, dict) or header.get("format") not in ("torchscript", "pickle"):
        raise InvalidInputError(
            "this artifact is not a Conveyor PyTorch model (no conveyor-torch header)",
            field="artifact",
        )
    return header, data[end + 1 :]


class PythonFlavor:
    """Any :class:`PythonModel` subclass, pickled."""

    name = "python"

    def matches(self, model: Any) -> bool:
        return isinstance(model, PythonModel)

    def save(self, model: Any) -> bytes:
        return _pickle_dumps(model)

    def load(self, data: bytes) -> Any:
        return _pickle_loads(data)

    def predict(self, model: Any, table: pa.Table) -> Any:
        from conveyor.data.frames import from_arrow

        kind = getattr(model, "frame_kind", "pandas")
        return model.predict(from_arrow(table, cast("FrameKind", kind)))

    def libraries(self) -> dict[str, str]:
        return {}


class Conformed:
    """A flavor whose predictions are read as a version's output signature says.

    :meth:`Registry.load` hands out a version's flavor wrapped so when its
    signature records outputs: every flavor (scikit-learn, ONNX, PyTorch,
    Python, one registered by a third party) then answers in the dtype and
    per-row shape recorded at registration (see :mod:`conveyor.registry.outputs`).
    A flavor with ``predict_as(model, table, outputs)`` chooses among its own
    outputs (ONNX: labels or probabilities); any other is conformed after
    ``predict``. Everything else is the wrapped flavor's.
    """

    def __init__(self, flavor: Flavor, outputs: Sequence[Output]) -> None:
        self.flavor = flavor
        self.outputs = tuple(outputs)
        self.name = flavor.name
        chooser = getattr(flavor, "predict_as", None)
        self._predict_as = chooser if callable(chooser) else None

    def matches(self, model: Any) -> bool:
        return self.flavor.matches(model)

    def save(self, model: Any) -> bytes:
        return self.flavor.save(model)

    def load(self, data: bytes) -> Any:
        return self.flavor.load(data)

    def predict(self, model: Any, table: pa.Table) -> Any:
        if self._predict_as is not None:
            return self._predict_as(model, table, self.outputs)
        from conveyor.registry.outputs import conform

        return conform(self.flavor.predict(model, table), self.outputs)

    def libraries(self) -> dict[str, str]:
        return self.flavor.libraries()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "flavor":  # copy and pickle probe before __init__
            raise AttributeError(name)
        return getattr(self.flavor, name)

    def __repr__(self) -> str:
        return f"Conformed({self.flavor!r}, {list(map(str, self.outputs))})"


def _check_flavor(name: str, flavor: Flavor) -> None:
    """A flavor is stored under its own name, and does everything the registry asks of one."""
    if getattr(flavor, "name", None) != name:
        raise InvalidInputError(
            f"flavor {name!r}: its name attribute is {getattr(flavor, 'name', None)!r}; a "
            "version records flavor.name and is loaded by it, so register it under that name",
            field="flavor",
        )
    missing = [
        m
        for m in ("matches", "save", "load", "predict", "libraries")
        if not callable(getattr(flavor, m, None))
    ]
    if missing:
        raise InvalidInputError(
            f"flavor {name!r} has no {', '.join(missing)}: see conveyor.registry.flavors.Flavor",
            field="flavor",
        )


# Order matters, the more specific first: XGBoost and LightGBM models are
# scikit-learn estimators too. A PythonModel that is also a torch module is
# saved as a PythonModel: its predict(frame) is the contract its author wrote.
_BUILT_IN: tuple[Flavor, ...] = (
    PythonFlavor(),
    TorchFlavor(),
    ONNXFlavor(),
    XGBoostFlavor(),
    LightGBMFlavor(),
    SklearnFlavor(),
)
#: Every flavor by name. ``FLAVORS.register(flavor.name, flavor)`` adds one: it is tried
#: before the built-in ones (the latest registered first), so it can claim models a
#: built-in flavor would otherwise take.
FLAVORS: NameTable[Flavor] = NameTable(
    "model flavor", ((f.name, f) for f in _BUILT_IN), field="flavor", check=_check_flavor
)
_BUILT_IN_NAMES = frozenset(f.name for f in _BUILT_IN)


def flavor_for(model: Any) -> Flavor:
    """The flavor that saves ``model``, from its type."""
    added = [f for name, f in FLAVORS.items() if name not in _BUILT_IN_NAMES]
    for flavor in (*reversed(added), *_BUILT_IN):
        if flavor.matches(model):
            return flavor
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    raise InvalidInputError(
        f"no flavor saves a {kind}: register a scikit-learn, XGBoost, LightGBM, PyTorch or "
        "ONNX model, "
        "or wrap it in a conveyor.registry.PythonModel subclass",
        field="model",
    )


def get_flavor(name: str) -> Flavor:
    """The flavor a version was saved with (InvalidInputError naming the known ones)."""
    return FLAVORS.require(name)


def check_libraries(recorded: Mapping[str, str], where: str) -> list[str]:
    """Warn for each library whose installed version differs from ``recorded``; the messages."""
    messages = []
    for library, saved in sorted(recorded.items()):
        installed = installed_version(library)
        if installed != saved:
            message = (
                f"{where} was saved with {library} {saved}, but "
                f"{library} {installed or 'is not installed'}"
                + (" is installed" if installed else "")
                + "; predictions may differ"
            )
            warnings.warn(message, LibraryVersionWarning, stacklevel=3)
            messages.append(message)
    return messages
