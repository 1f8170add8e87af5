"""A model's output signature: what it answers per row, recorded at registration.

At registration the model is run on a few rows of its training frame (the
input example, or the first rows of ``signature_from``) and each output is
recorded with its dtype and its **per-row shape**: ``[]`` for one value per
row (a label, a regression value), ``[k]`` for ``k`` values per row (class
probabilities or logits, a multi-output regression). It is stored inside
the version's signature document, beside the inputs::

    {"inputs": [...], "example": [...],
     "outputs": [{"name": "predict", "dtype": "float64", "shape": []}]}

A model whose ``predict`` returns a mapping has one output per key; any other
answer is one output, ``predict``. Versions registered before output
signatures existed have none and are served as they answer.

:func:`conform` turns what a model answered into what its signature says:
an ``(n, 1)`` column becomes ``(n,)`` when the signature says one value per
row, float32 becomes float64, integral floats become integers. An answer
that cannot be read so (another number of values per row, strings for
numbers) is a :class:`~conveyor.errors.ModelUnavailableError` (reason
``output_mismatch``) naming the output. This is how an optimized copy (ONNX)
answers exactly like its parent, so a canary never changes the response's
shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.errors import ModelUnavailableError

__all__ = [
    "DEFAULT_OUTPUT",
    "Output",
    "conform",
    "conform_array",
    "describe",
    "infer_outputs",
    "mismatches",
    "outputs_from_dicts",
]

#: The name of the single output of a model whose predict returns one array.
DEFAULT_OUTPUT = "predict"
_NUMERIC = "biuf"


@dataclass(frozen=True, slots=True)
class Output:
    """One output: its name, its dtype (numpy's name, or ``string``) and per-row shape."""

    name: str
    dtype: str
    shape: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Output:
        return cls(str(data["name"]), str(data["dtype"]), tuple(int(d) for d in data["shape"]))

    @property
    def kind(self) -> str:
        """numpy's dtype kind: ``f`` float, ``i``/``u`` integer, ``b`` bool, ``U`` string."""
        if self.dtype in ("string", "object"):
            return "U" if self.dtype == "string" else "O"
        import numpy as np

        return str(np.dtype(self.dtype).kind)

    @property
    def values_per_row(self) -> int:
        return math.prod(self.shape)

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype} {list(self.shape)} per row"


def outputs_from_dicts(data: Sequence[Mapping[str, Any]] | None) -> tuple[Output, ...]:
    return tuple(Output.from_dict(d) for d in data or ())


def _array(value: Any) -> Any:
    """``value`` as a numpy array (pandas, polars, Arrow, lists); None when it is not one."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "to_numpy"):  # pandas, polars, Arrow
        try:
            return np.asarray(value.to_numpy())
        except TypeError:  # pyarrow's zero_copy_only default
            return np.asarray(value.to_numpy(zero_copy_only=False))
    try:
        return np.asarray(value)
    except (ValueError, TypeError):
        return None


def _dtype_name(array: Any) -> str:
    kind = array.dtype.kind
    if kind in "US":
        return "string"
    if kind == "O":
        flat = array.reshape(-1)
        if flat.size and all(isinstance(v, str) for v in flat.tolist()):
            return "string"
        return "object"
    return str(array.dtype)


def _output(name: str, value: Any, rows: int) -> Output | None:
    array = _array(value)
    if array is None or array.ndim == 0 or array.shape[0] != rows:
        return None  # no row axis to read a per-row shape from
    return Output(name, _dtype_name(array), tuple(int(d) for d in array.shape[1:]))


def infer_outputs(prediction: Any, rows: int) -> tuple[Output, ...]:
    """The output signature of what a model answered for ``rows`` rows (empty when an
    answer has no row axis, so nothing can be said about its rows)."""
    if isinstance(prediction, Mapping):
        found = [_output(str(k), v, rows) for k, v in prediction.items()]
    else:
        found = [_output(DEFAULT_OUTPUT, prediction, rows)]
    if any(f is None for f in found):
        return ()
    return tuple(f for f in found if f is not None)


def _mismatch(output: Output, message: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"the model's output {output.name!r} {message}; its output signature says "
        f"{output.dtype} {list(output.shape)} per row",
        reason="output_mismatch",
        field=output.name,
    )


def fits(value: Any, output: Output) -> bool:
    """Whether ``value`` can be read as ``output`` (by :func:`conform_array`)."""
    try:
        conform_array(value, output)
    except ModelUnavailableError:
        return False
    return True


def conform_array(value: Any, output: Output) -> Any:
    """``value`` shaped and typed as ``output`` says; unchanged when it already is.

    ModelUnavailableError (reason ``output_mismatch``, ``field`` the output) when it
    holds another number of values per row or another kind of value.
    """
    import numpy as np

    array = _array(value)
    if array is None or array.ndim == 0:
        raise _mismatch(output, f"is a {type(value).__name__} without one value per row")
    rows = array.shape[0]
    changed = False
    if array.shape[1:] != output.shape:
        if array.size != rows * output.values_per_row:
            raise _mismatch(
                output, f"has {list(array.shape[1:])} values per row ({_dtype_name(array)})"
            )
        array = array.reshape((rows, *output.shape))
        changed = True
    want = output.kind
    have = array.dtype.kind
    if want in _NUMERIC:
        if have not in _NUMERIC:
            raise _mismatch(output, f"holds {_dtype_name(array)} values")
        target = np.dtype(output.dtype)
        if array.dtype != target:
            cast = array.astype(target)
            if want in "iub" and have == "f" and not np.array_equal(cast, array):
                raise _mismatch(output, f"holds non-integral {array.dtype} values")
            array, changed = cast, True
    elif want == "U" and have not in "USO":
        raise _mismatch(output, f"holds {_dtype_name(array)} values, not strings")
    return array if changed else value


def conform(prediction: Any, outputs: Sequence[Output]) -> Any:
    """``prediction`` read as the output signature ``outputs`` says (see the module)."""
    if not outputs:
        return prediction
    if isinstance(prediction, Mapping):
        by_name = {o.name: o for o in outputs}
        return {
            k: conform_array(v, by_name[str(k)]) if str(k) in by_name else v
            for k, v in prediction.items()
        }
    if len(outputs) == 1:
        return conform_array(prediction, outputs[0])
    return prediction


def describe(outputs: Sequence[Output]) -> str:
    return "; ".join(str(o) for o in outputs) if outputs else "no recorded outputs"


def mismatches(expected: Sequence[Output], found: Sequence[Output]) -> list[str]:
    """How ``found`` differs from ``expected``: one sentence per output, empty when equal."""
    problems = []
    by_name = {o.name: o for o in found}
    for want in expected:
        got = by_name.get(want.name)
        if got is None:
            problems.append(f"output {want.name!r} is missing (expected {want})")
        elif got.shape != want.shape or got.dtype != want.dtype:
            problems.append(
                f"output {want.name!r} is {got.dtype} {list(got.shape)} per row; "
                f"expected {want.dtype} {list(want.shape)}"
            )
    for name in sorted(set(by_name) - {o.name for o in expected}):
        problems.append(f"output {name!r} is not in the expected signature")
    return problems
