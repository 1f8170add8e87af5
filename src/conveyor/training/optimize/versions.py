"""Optimize a registered version: a new version linked to its parent, with a measured report.

::

    optimized = optimize_version(project, "fraud@champion", quantize=True)
    optimized.version.parent_id == project.registry.resolve("fraud@champion").id
    optimized.comparison.size_ratio, optimized.comparison.child_p95_latency_ms
    optimized.report            # kind "optimization", saved under model:fraud / N

``method`` is ``onnx`` (scikit-learn or PyTorch, INT8 by default),
``prune`` (PyTorch magnitude pruning) or ``distill`` (a tree student of a
scikit-learn teacher). The hold-out comes from the model's spec (``models:`` in ``conveyor.yaml``),
so the child is measured on rows neither model trained on. The child must
answer like its parent (same outputs, dtype and per-row shape, see
:mod:`conveyor.training.optimize.outputs`): the report's check
``output_signature`` fails it otherwise. The new version
is a plain ONNX model: it is not champion, and like any version it must pass
its gates (``conveyor models gates``) before a promotion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import InvalidInputError
from conveyor.training.events import MODEL_OPTIMIZED

if TYPE_CHECKING:
    from conveyor.checks.result import Report
    from conveyor.project import Project
    from conveyor.registry.versions import ModelVersion
    from conveyor.training.optimize.report import OptimizationReport

__all__ = ["OPTIMIZATION_REPORT_KIND", "Method", "Optimized", "optimize_version"]

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


Method = Literal["onnx", "prune", "distill"]


def optimize_version(
    project: Project,
    ref: str,
    *,
    method: Method = "onnx",
    quantize: bool = True,
    amount: float = 0.5,
    max_depth: int = 6,
    task: Literal["classification", "regression"] | None = None,
    max_metric_drop: float = 0.01,
    actor: str | None = None,
) -> Optimized:
    """A smaller or faster version of ``ref``, registered as its child with a report.

    - ``onnx``: export a scikit-learn or PyTorch model to ONNX, INT8-quantized
      unless ``quantize=False``;
    - ``prune``: zero the ``amount`` share of a PyTorch model's smallest weights;
    - ``distill``: train a decision tree of ``max_depth`` on a scikit-learn
      teacher's outputs (its training rows, never the hold-out).

    ``task`` says how a PyTorch model's outputs read (see
    :mod:`conveyor.training.optimize.torch_model`); scikit-learn models know.
    """
    from conveyor.checks.persist import save_report
    from conveyor.registry.promotion import gate_subject
    from conveyor.training.flow import prepare
    from conveyor.training.optimize.report import compare

    registry = project.registry
    parent = registry.resolve(ref)
    allowed = {"onnx": ("sklearn", "pytorch"), "prune": ("pytorch",), "distill": ("sklearn",)}
    if method not in allowed:
        raise InvalidInputError(
            f"unknown optimization {method!r}; one of {', '.join(allowed)}", field="method"
        )
    if parent.flavor not in allowed[method]:
        raise InvalidInputError(
            f"{parent.ref} is a {parent.flavor} model; {method} takes "
            f"{' or '.join(allowed[method])} models",
            field="ref",
        )
    from conveyor.training.settings import model_spec

    spec = model_spec(project.spec, parent.model)
    prepared = prepare(project, spec, actor=actor)
    X, y = prepared.X_holdout, prepared.y_holdout
    model = registry.load(parent).model
    torch_task = task if parent.flavor == "pytorch" else None
    notes: dict[str, Any] = {}
    if method == "onnx":
        import onnx

        from conveyor.training.optimize.quantize import quantize_dynamic_int8

        if parent.flavor == "pytorch":
            from conveyor.training.optimize.torch_model import export_torch_onnx

            exported = export_torch_onnx(model, X.head(100), task=torch_task)
        else:
            from conveyor.training.optimize.onnx_model import export_onnx

            exported = export_onnx(model, X.head(100))
        child_model: Any = quantize_dynamic_int8(exported) if quantize else exported
        kind = "onnx-int8" if quantize else "onnx"
        to_register: Any = onnx.load_from_string(child_model.data)
    elif method == "prune":
        from conveyor.training.optimize.torch_model import prune_magnitude

        pruned = prune_magnitude(model, amount)
        child_model, to_register, kind = pruned, pruned.module, f"pruned-{amount:g}"
        notes["sparsity"] = pruned.overall_sparsity
    else:
        from conveyor.training.optimize.distillation import distill

        done = distill(model, prepared.X_train, max_depth=max_depth, holdout_X=X, holdout_y=y)
        child_model = to_register = done.student
        kind = f"distilled-tree-{max_depth}"
        notes["soft_targets"] = done.soft_targets
    comparison = compare(
        model,
        child_model,
        X,
        y,
        parent_name=parent.ref,
        child_name=f"{parent.model}@next ({kind})",
        task=torch_task,
        metric=_quality_metric(project),
    )
    metrics = {
        "size_bytes": float(comparison.child_size_bytes),
        "p95_latency_ms": comparison.child_p95_latency_ms,
    }
    if comparison.child_metric is not None:
        metrics[f"holdout_{comparison.metric}"] = comparison.child_metric
    version = registry.register(
        parent.model,
        to_register,
        signature_from=prepared.X_train.head(1000),
        params={"optimization": kind, "parent": parent.ref, **notes},
        metrics=metrics,
        parent=parent,
        dataset_versions=parent.dataset_version_ids,
        tags={"optimization": kind},
        actor=actor,
    )
    from conveyor.checks.result import Report
    from conveyor.training.optimize.outputs import output_signature_check

    checks = [
        *comparison.to_checks(max_metric_drop=max_metric_drop),
        output_signature_check(registry, parent, version, X),
    ]
    report = Report.of(
        gate_subject(parent.model),
        checks,
        kind=OPTIMIZATION_REPORT_KIND,
        subject_version=str(version.number),
    )
    save_report(project.store, report)
    project.events.record(
        MODEL_OPTIMIZED,
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
    )
    return Optimized(version, parent, comparison, report)


def _quality_metric(project: Project) -> str | None:
    """The spec's quality metric (``slos.quality.metric``): what the parent's gates judged
    and what its version reports, so the child reports the same; None without one."""
    quality = project.spec.slos.quality
    return quality.metric if quality else None
