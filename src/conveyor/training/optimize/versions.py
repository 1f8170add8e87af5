"""Optimize a registered version: a new version linked to its parent, with a measured report.

::

    optimized = optimize_version(project, "fraud@champion", quantize=True)
    optimized.version.parent_id == project.registry.resolve("fraud@champion").id
    optimized.comparison.size_ratio, optimized.comparison.child_p95_latency_ms
    optimized.report            # kind "optimization", saved under model:fraud / N

The hold-out comes from the model's spec (``models:`` in ``conveyor.yaml``),
so the child is measured on rows neither model trained on. The new version
is a plain ONNX model: it is not champion, and like any version it must pass
its gates (``conveyor models gates``) before a promotion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.checks.result import Report
    from conveyor.registry.versions import ModelVersion
    from conveyor.training.flow import FlowProject
    from conveyor.training.optimize.report import OptimizationReport

__all__ = ["OPTIMIZATION_REPORT_KIND", "Optimized", "optimize_version"]

OPTIMIZATION_REPORT_KIND = "optimization"


@dataclass(frozen=True)
class Optimized:
    """The optimized version, how it compares with its parent, and the saved report."""

    version: ModelVersion
    parent: ModelVersion
    comparison: OptimizationReport
    report: Report

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version.ref,
            "parent": self.parent.ref,
            "report": self.report.id,
            "verdict": self.report.verdict,
            "comparison": self.comparison.to_dict(),
        }


def optimize_version(
    project: FlowProject,
    ref: str,
    *,
    quantize: bool = True,
    max_metric_drop: float = 0.01,
    actor: str | None = None,
) -> Optimized:
    """Export ``ref`` (scikit-learn) to ONNX, optionally INT8-quantize it, measure, register."""
    import onnx

    from conveyor.checks.persist import save_report
    from conveyor.registry.promotion import gate_subject
    from conveyor.training.flow import prepare
    from conveyor.training.optimize.onnx_model import export_onnx
    from conveyor.training.optimize.quantize import quantize_dynamic_int8
    from conveyor.training.optimize.report import compare

    registry = project.registry
    parent = registry.resolve(ref)
    if parent.flavor not in ("sklearn",):
        raise InvalidInputError(
            f"{parent.ref} is a {parent.flavor} model; conveyor optimize exports scikit-learn "
            "models (PyTorch: conveyor.training.optimize.torch_model)",
            field="ref",
        )
    spec = project.spec.model(parent.model)
    prepared = prepare(project, spec, actor=actor)
    X, y = prepared.X_holdout, prepared.y_holdout
    model = registry.load(parent).model
    exported = export_onnx(model, X.head(100))
    child = quantize_dynamic_int8(exported) if quantize else exported
    kind = "onnx-int8" if quantize else "onnx"
    comparison = compare(
        model, child, X, y, parent_name=parent.ref, child_name=f"{parent.model}@next ({kind})"
    )
    metrics = {
        "size_bytes": float(comparison.child_size_bytes),
        "p95_latency_ms": comparison.child_p95_latency_ms,
    }
    if comparison.child_metric is not None:
        metrics[f"holdout_{comparison.metric}"] = comparison.child_metric
    version = registry.register(
        parent.model,
        onnx.load_from_string(child.data),
        signature_from=prepared.X_train.head(1000),
        params={"optimization": kind, "parent": parent.ref},
        metrics=metrics,
        parent=parent,
        dataset_versions=parent.dataset_version_ids,
        tags={"optimization": kind},
        description=None,
        actor=actor,
    )
    report = comparison.to_report(
        gate_subject(parent.model),
        subject_version=str(version.number),
        max_metric_drop=max_metric_drop,
    )
    save_report(project.store, report)
    project.events.emit(
        "model.optimized",
        subject=parent.model,
        subject_version=str(version.number),
        actor=actor,
        payload={
            "parent_id": parent.id,
            "version_id": version.id,
            "optimization": kind,
            "report": report.id,
            "size_ratio": comparison.size_ratio,
            "metric_difference": comparison.metric_difference,
        },
        durable=True,
    )
    return Optimized(version, parent, comparison, report)
