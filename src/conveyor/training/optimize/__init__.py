"""Model optimization: ONNX export, dynamic INT8 quantization and distillation.

Each function takes and returns models plus an :class:`OptimizationReport`
(size, p95 single-row latency and hold-out quality against the parent) whose
``to_checks()`` are ordinary :class:`~conveyor.checks.CheckResult` objects.
Needs the ``onnx`` extra (``pip install 'conveyor[onnx]'``); nothing is
imported until a name is used.
"""

from conveyor._lazy import lazy_exports

__all__ = [
    "Distillation",
    "OnnxModel",
    "OptimizationReport",
    "Signature",
    "compare",
    "distill",
    "export_onnx",
    "p95_latency_ms",
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
    },
    __all__,
)
