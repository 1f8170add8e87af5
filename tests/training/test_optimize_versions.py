"""optimize_version for every method: ONNX (scikit-learn and PyTorch), pruning, distillation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from training_support import loans

from conveyor.errors import InvalidInputError
from conveyor.project import Project, init_project
from conveyor.training.flow import evaluate_version, train_candidate
from conveyor.training.optimize.versions import optimize_version

SPEC = """
slos:
  quality: {metric: roc_auc, floor: 0.7, direction: maximize}
models:
  net:
    train: opt_trainer:fit_net
    dataset: loans
    features: [income, debt, age]
    target: default
    task: classification
    holdout: {by: random, fraction: 0.25}
    gates:
      - metric_floor: {}
  tree:
    train: opt_trainer:fit_forest
    dataset: loans
    features: [income, debt, age]
    target: default
    holdout: {by: random, fraction: 0.25}
    gates:
      - metric_floor: {}
"""

TRAINER = """
import numpy as np
import torch
from torch import nn
from sklearn.ensemble import RandomForestClassifier


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([50.0, 20.0, 45.0]))
        self.register_buffer("scale", torch.tensor([15.0, 8.0, 12.0]))
        self.body = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x):
        return self.body((x - self.mean) / self.scale)


def fit_net(X, y, *, seed):
    torch.manual_seed(seed)
    net = Net()
    x = torch.tensor(np.asarray(X, dtype=np.float32))
    t = torch.tensor(np.asarray(y, dtype=np.int64))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), t).backward()
        optimizer.step()
    return net.eval()


def fit_forest(X, y, *, seed):
    return RandomForestClassifier(n_estimators=60, random_state=seed).fit(X, y)
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    init_project(tmp_path, name="optimize")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write(SPEC)
    (tmp_path / "opt_trainer.py").write_text(TRAINER)
    with Project.open(tmp_path) as proj:
        proj.data.ingest("loans", loans(2000, seed=11))
        yield proj


def test_a_torch_model_trains_through_the_gates_then_exports_and_prunes(project: Project) -> None:
    net = train_candidate(project, "net", seed=1)
    assert net.version.flavor == "pytorch" and net.passed, net.report.failures
    assert net.version.metrics["holdout_roc_auc"] > 0.7

    exported = optimize_version(project, "net@1")
    assert exported.version.flavor == "onnx" and exported.version.parent_id == net.version.id
    assert exported.version.tags["optimization"] == "onnx-int8"
    assert abs(exported.comparison.metric_difference or 0.0) < 0.02
    assert evaluate_version(project, exported.version.ref).passed  # judged via onnxruntime

    pruned = optimize_version(project, "net@1", method="prune", amount=0.5)
    assert pruned.version.flavor == "pytorch" and pruned.version.params["sparsity"] >= 0.49
    loaded = project.registry.load(pruned.version).model
    weights = [p.detach().numpy() for n, p in loaded.named_parameters() if n.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert zeros >= 0.49
    assert pruned.comparison.child_metric is not None


def test_distillation_registers_a_small_student(project: Project) -> None:
    forest = train_candidate(project, "tree", seed=1)
    student = optimize_version(project, forest.version.ref, method="distill", max_depth=4)
    assert student.version.flavor == "sklearn" and student.version.parent_id == forest.version.id
    assert student.comparison.child_size_bytes < student.comparison.parent_size_bytes / 5
    model = project.registry.load(student.version).model
    assert model.get_depth() <= 4
    assert student.report.kind == "optimization"
    with pytest.raises(InvalidInputError, match="prune takes pytorch"):
        optimize_version(project, forest.version.ref, method="prune")
    with pytest.raises(InvalidInputError, match="unknown optimization"):
        optimize_version(project, forest.version.ref, method="zip")  # type: ignore[arg-type]
    assert np.isfinite(student.comparison.child_p95_latency_ms)


def test_an_onnx_child_answers_in_its_parents_shape(project: Project) -> None:
    """The child's report checks its output signature; a torch classifier's ONNX copy
    serves the parent's logits (n, 2) float32, not labels."""
    net = train_candidate(project, "net", seed=1)
    exported = optimize_version(project, "net@1", quantize=False)
    check = next(c for c in exported.report.checks if c.name == "output_signature")
    assert check.passed, check.detail
    assert check.threshold == "predict: float32 [2] per row"
    rows = loans(20, seed=3).to_pandas()[["income", "debt", "age"]]
    parent_answer = project.registry.load(net.version).predict(rows)
    child_answer = project.registry.load(exported.version).predict(rows)
    assert child_answer.shape == parent_answer.shape == (20, 2)
    assert child_answer.dtype == parent_answer.dtype
    np.testing.assert_allclose(child_answer, parent_answer, rtol=1e-3, atol=1e-3)


def test_a_child_answering_another_shape_fails_its_output_gate(project: Project) -> None:
    from sklearn.linear_model import LinearRegression

    from conveyor.training.optimize.outputs import output_signature_check

    frame = loans(300, seed=5).to_pandas()
    X = frame[["income", "debt", "age"]]
    registry = project.registry
    parent = registry.register(
        "house", LinearRegression().fit(X, frame["income"] * 2.0), signature_from=X
    )
    two = np.column_stack([frame["income"], frame["debt"]])
    child = registry.register(
        "house", LinearRegression().fit(X, two), signature_from=X, parent=parent
    )
    check = output_signature_check(registry, parent, child, X)
    assert not check.passed
    assert "house@2 does not answer in its parent's shape" in check.detail
    assert "output 'predict' is float64 [2] per row; expected float64 []" in check.detail


def test_an_optimized_child_reports_its_parents_headline_metric(tmp_path: Path) -> None:
    """A regression judged by r2 (the task's default, or slos.quality) gets a child whose
    version reports holdout_r2 too, so `models compare` lines the two up."""
    import subprocess
    import sys

    root = tmp_path / "p"
    subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "init", str(root), "--template", "regression"],
        check=True,
        capture_output=True,
    )
    import numpy as np
    import pandas as pd

    from conveyor.project import Project
    from conveyor.training.optimize.versions import optimize_version

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["y"] = 3 * frame["a"] - frame["b"] + rng.normal(0, 0.1, 300)
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(
            "models:\n  m:\n    train: sklearn.linear_model:LinearRegression\n"
            "    dataset: pts\n    features: [a, b]\n    target: y\n    task: regression\n"
        )
    with Project.open(root, env={}) as project:
        project.data.ingest("pts", frame, actor="t")
        from sklearn.linear_model import LinearRegression

        project.registry.register(
            "m",
            LinearRegression().fit(frame[["a", "b"]], frame["y"]),
            signature_from=frame[["a", "b"]],
        )
        child = optimize_version(project, "m@1", actor="t")
    assert "holdout_r2" in child.version.metrics and "holdout_rmse" not in child.version.metrics
