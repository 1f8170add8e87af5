"""Validation gates for a candidate model, each run by :func:`conveyor.checks.run_gates`.

::

    from conveyor.checks import run_gates
    from conveyor.training.gates import (
        GateContext, champion_comparison, data_checks, fairness, latency_budget,
        metric_floor, regression_suite,
    )

    ctx = GateContext(candidate, X_holdout, y_holdout, champion=champion,
                      groups=X_holdout["region"], slos=spec.slos,
                      training_validation=ingest.report)
    report = run_gates("model:fraud", [
        metric_floor(spec.slos.quality),
        champion_comparison("roc_auc", min_absolute_change=0.005),
        regression_suite(curated_examples),
        fairness("accuracy", min_group_size=50),
        latency_budget(),                       # slos.latency_p95_ms
        data_checks(),                          # the context's training_validation
    ], ctx)

Each factory checks its arguments when called (a typo fails at once) and
returns a gate: a callable taking a :class:`GateContext` and returning one
or several :class:`~conveyor.checks.CheckResult` whose detail says what was
observed against what threshold. Gates take models and data directly: the
registry can call them on any version. Importing this package loads no
numpy: every gate imports what it needs when it runs. Metrics are named from
the one registry, :mod:`conveyor.checks.metrics` (re-exported here).
"""

from conveyor.checks.metrics import METRICS, Metric, metric
from conveyor.training.gates.compare import (
    BootstrapInterval,
    bootstrap_difference,
    champion_comparison,
    metric_floor,
)
from conveyor.training.gates.context import GateContext, default_predict, default_score
from conveyor.training.gates.fairness import fairness
from conveyor.training.gates.suites import data_checks, latency_budget, regression_suite
from conveyor.training.gates.validate import validate_candidate

__all__ = [
    "METRICS",
    "BootstrapInterval",
    "GateContext",
    "Metric",
    "bootstrap_difference",
    "champion_comparison",
    "data_checks",
    "default_predict",
    "default_score",
    "fairness",
    "latency_budget",
    "metric",
    "metric_floor",
    "regression_suite",
    "validate_candidate",
]
