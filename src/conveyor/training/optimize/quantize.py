"""Dynamic INT8 quantization of an ONNX model with ONNX Runtime."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import InvalidInputError
from conveyor.training.optimize.onnx_model import OnnxModel

if TYPE_CHECKING:
    import onnx

__all__ = ["QUANTIZABLE_OPS", "quantize_dynamic_int8", "quiet_pre_processing_advice"]

#: Operators whose weights ``quantize_dynamic`` turns into INT8. Tree ensembles
#: and the ``ai.onnx.ml`` linear operators skl2onnx emits for linear models are
#: not among them.
QUANTIZABLE_OPS = frozenset(
    {"MatMul", "Gemm", "Conv", "Attention", "LSTM", "Gather", "EmbedLayerNormalization"}
)


def quantize_dynamic_int8(model: OnnxModel) -> OnnxModel:
    """A copy of ``model`` with its weights stored as INT8 and activations quantized at run time.

    A model with nothing to quantize comes back with the same bytes, a note
    saying so and ``quantized_weights=0``, which its report turns into a
    warning, rather than failing or pretending.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not isinstance(model, OnnxModel):
        raise InvalidInputError(
            "quantize_dynamic_int8 takes an OnnxModel (see export_onnx), "
            f"got {type(model).__name__}"
        )
    proto = onnx.load_from_string(model.data)
    ops = {node.op_type for node in proto.graph.node if node.domain in ("", "ai.onnx")}
    found = sorted(ops & QUANTIZABLE_OPS)
    if not found:
        every = sorted({node.op_type for node in proto.graph.node})
        note = (
            f"nothing to quantize: the graph of {model.signature.estimator or 'the model'} has "
            f"no {'/'.join(sorted(QUANTIZABLE_OPS))} operator (it uses {', '.join(every)}); "
            "the model is unchanged"
        )
        return OnnxModel(
            model.data,
            intra_op_threads=model.intra_op_threads,
            notes=(*model.notes, note),
            quantized_weights=0,
        )
    before = _int8_initializers(proto)
    # quantize_dynamic reads and writes files; large models keep external data beside them.
    with tempfile.TemporaryDirectory(prefix="conveyor-quantize-") as folder:
        source, target = Path(folder, "model.onnx"), Path(folder, "model.int8.onnx")
        source.write_bytes(model.data)
        try:
            with quiet_pre_processing_advice():
                quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise InvalidInputError(
                f"ONNX Runtime could not quantize {model.signature.estimator}: {exc}"
            ) from exc
        data = target.read_bytes()
    quantized = _int8_initializers(onnx.load_from_string(data)) - before
    note = f"dynamic INT8: {quantized} weight tensor(s) quantized in {', '.join(found)} operators"
    return OnnxModel(
        data,
        intra_op_threads=model.intra_op_threads,
        notes=(*model.notes, note),
        quantized_weights=quantized,
    )


class _PreProcessingAdvice(logging.Filter):
    """Drops ONNX Runtime's "Please consider (to run) pre-processing before quantization"."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Please consider") and "pre-processing" in message)


class _AsWithoutHandlers(logging.Handler):
    """What Python does with a record when no handler is configured: ``lastResort``."""

    def emit(self, record: logging.LogRecord) -> None:
        last = logging.lastResort
        if last is not None and record.levelno >= last.level:
            last.handle(record)


@contextmanager
def quiet_pre_processing_advice() -> Iterator[None]:
    """Silence ONNX Runtime's advice to pre-process before quantizing, and nothing else.

    ``quantize_dynamic`` logs it on the root logger with ``logging.warning`` on
    every call, which also configures the root logger (``basicConfig``) when it
    has no handler, so it reached the console of every ``conveyor optimize``.
    For the call only: a filter on the root logger drops that one message,
    and when the root logger has no handler a stand-in one prints every other
    record as Python would have (``logging.lastResort``), so nothing else is
    hidden and no handler is left behind.
    """
    root = logging.getLogger()
    advice = _PreProcessingAdvice()
    stand_in = None if root.handlers else _AsWithoutHandlers()
    root.addFilter(advice)
    if stand_in is not None:
        root.addHandler(stand_in)
    try:
        yield
    finally:
        root.removeFilter(advice)
        if stand_in is not None:
            root.removeHandler(stand_in)


def _int8_initializers(proto: onnx.ModelProto) -> int:
    import onnx

    kinds = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    # Weight matrices only: the scalar zero points beside them are INT8 too.
    return sum(
        1
        for tensor in proto.graph.initializer
        if tensor.data_type in kinds and len(tensor.dims) >= 2
    )
