"""Model optimization: ONNX export, dynamic INT8 quantization, pruning and distillation.

Each function takes and returns models plus an :class:`OptimizationReport`
(size, p95 single-row latency and hold-out quality against the parent) whose
``to_checks()`` are ordinary :class:`~conveyor.checks.CheckResult` objects.
Needs the ``onnx`` extra (``pip install 'conveyor[onnx]'``), and the
``torch`` extra for PyTorch modules (:func:`export_torch_onnx`,
:func:`prune_magnitude`); nothing is imported until a name is used.
"""

from conveyor._lazy import lazy_exports

__all__ = [
    "Distillation",
    "OnnxModel",
    "OptimizationReport",
    "PruneResult",
    "Signature",
    "TorchPredictor",
    "compare",
    "distill",
    "export_onnx",
    "export_torch_onnx",
    "p95_latency_ms",
    "prune_magnitude",
    "quantize_dynamic_int8",
    "size_of",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Distillation": ".distillation",
        "distill": ".distillation",
        "OnnxModel": ".onnx_model",
        "Signature": ".onnx_model",
        "export_onnx": ".onnx_model",
        "OptimizationReport": ".report",
        "compare": ".report",
        "p95_latency_ms": ".report",
        "size_of": ".report",
        "quantize_dynamic_int8": ".quantize",
        "PruneResult": ".torch_model",
        "TorchPredictor": ".torch_model",
        "export_torch_onnx": ".torch_model",
        "prune_magnitude": ".torch_model",
    },
    __all__,
)
