"""What the experiment tests share: a project with model ``m`` at v1..v3 (routed on v1),
and A-B traffic with feedback written to the log as the server and ``POST /v1/feedback``
write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.events.schema import Event
from conveyor.project import Project


def make_project(root: Path, *, versions: int = 3, env: dict[str, str] | None = None) -> Project:
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.project import init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    init_project(root, name="experiments")
    project = Project.open(root, env=env or {})
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    for _ in range(versions):
        # every version the same function: arms on "equivalent versions"
        project.registry.register("m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X)
    RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
    return project


def ab_traffic(
    project: Project,
    *,
    arms: dict[str, int],
    n: int,
    rates: dict[str, float],
    since: datetime | None = None,
    shares: dict[str, float] | None = None,
    error_rates: dict[str, float] | None = None,
    revenue: dict[str, float] | None = None,
    outputs: dict[str, float] | None = None,
    slow: dict[str, float] | None = None,
    seed: int = 0,
) -> None:
    """``n`` requests, a microsecond apart from ``since`` (now), split by ``shares`` (default even):
    each arm converts at ``rates[arm]`` (feedback label 1 or 0, through
    ``record_feedback``) and fails with a 500 at ``error_rates[arm]``."""
    from conveyor.monitoring.feedback import record_feedback

    rng = np.random.default_rng(seed)
    since = since or datetime.now(UTC)
    labels = list(arms)
    share = np.array([(shares or {}).get(a, 1.0) for a in labels], dtype=float)
    chosen = rng.choice(len(labels), size=n, p=share / share.sum())
    events: list[Event] = []
    feedback: list[dict[str, Any]] = []
    for i, k in enumerate(chosen):
        arm = labels[k]
        version = arms[arm]
        when = since + timedelta(microseconds=i)  # in time order, and never in the future
        rid = f"r-{seed}-{i}"
        label = int(rng.random() < rates[arm])
        right = rng.random() < (outputs or {}).get(arm, 0.5)
        output = float(label if right else 1 - label)
        if rng.random() < (error_rates or {}).get(arm, 0.0):
            events.append(
                Event(
                    "prediction.failed",
                    subject="m",
                    subject_version=str(version),
                    request_id=rid,
                    time=when,
                    payload={
                        "status": 500,
                        "code": "internal",
                        "version_id": f"m-v{version}",
                        "arm": arm,
                        "latency_ms": 20.0,
                    },
                )
            )
            continue
        events.append(
            Event(
                "prediction",
                subject="m",
                subject_version=str(version),
                request_id=rid,
                time=when,
                payload={
                    "version_id": f"m-v{version}",
                    "arm": arm,
                    "flag": None,
                    "latency_ms": float(rng.lognormal(np.log(20), 0.3))
                    * (slow or {}).get(arm, 1.0),
                    "cached": False,
                    "rows": 1,
                    # outputs[arm]: the chance the model's class (the output) is the label
                    "output": [output],
                },
            )
        )
        record: dict[str, Any] = {"request_id": rid, "label": label}
        if revenue is not None:  # a converted request's value: exponential, mean revenue[arm]
            record["value"] = float(rng.exponential(revenue[arm])) if label else 0.0
        feedback.append(record)
    project.events.append_many(events)
    project.events.flush()
    record_feedback(project, feedback, source="test")
    project.events.flush()
