"""What the rollout tests share: a project with model ``m`` (v1 stable, routed; v2 the
candidate, its gates passed), a clock the tests move, and traffic written to the log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from conveyor.events.schema import Event
from conveyor.project import Project

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


def passed_gates(project: Project, model: str, number: int, passed: bool = True) -> None:
    from conveyor.checks.persist import save_report
    from conveyor.checks.result import CheckResult, Report
    from conveyor.registry.promotion import GATE_REPORT_KIND, gate_subject

    report = Report(gate_subject(model), kind=GATE_REPORT_KIND, subject_version=str(number))
    report.add(CheckResult("accuracy", passed, 0.9 if passed else 0.5, 0.8))
    save_report(project.store, report)


def make_project(
    root: Path, *, versions: int = 3, spec: str = "", env: dict[str, str] | None = None
) -> Project:
    """``m`` at v1..``versions`` (y = k * (a + b)), the route fixed on v1, v1 champion,
    every version but the last with passed gates (the last: failed)."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.project import init_project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    init_project(root, name="rollouts")
    if spec:
        with (root / "conveyor.yaml").open("a") as out:
            out.write(spec)
    project = Project.open(root, env=env or {})
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    for k in range(1, versions + 1):
        project.registry.register(
            "m", LinearRegression().fit(X, k * X.sum(axis=1)), signature_from=X
        )
        passed_gates(project, "m", k, passed=k < versions)
    RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
    project.registry.promote("m", 1, actor="test")
    return project


def traffic(
    project: Project,
    *,
    since: datetime,
    seconds: float,
    rate: float,
    share: float,
    candidate: int = 2,
    stable: int = 1,
    error_rate: float = 0.0,
    slow: float = 1.0,
    seed: int = 0,
) -> None:
    """``rate`` req/s for ``seconds`` from ``since``: ``share`` of them to ``candidate``
    (``error_rate`` of those fail with a 500, latency times ``slow``), the rest to
    ``stable``; written as the server writes them."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    events: list[Event] = []
    for i in range(n):
        when = since + timedelta(seconds=float(rng.uniform(0, seconds)))
        is_candidate = rng.random() < share
        version = candidate if is_candidate else stable
        latency = float(rng.lognormal(np.log(20), 0.3)) * (slow if is_candidate else 1.0)
        if is_candidate and rng.random() < error_rate:
            kind = "prediction.failed"
            payload: dict[str, Any] = {
                "status": 500,
                "code": "internal",
                "version_id": f"m-v{version}",
                "arm": f"v{version}",
                "latency_ms": latency,
            }
        else:
            kind = "prediction"
            payload = {
                "version_id": f"m-v{version}",
                "arm": f"v{version}",
                "flag": None,
                "latency_ms": round(latency, 3),
                "cached": False,
                "rows": 1,
                "output": [float(rng.normal())],
            }
        events.append(
            Event(
                kind,
                subject="m",
                subject_version=str(version),
                request_id=f"r-{seed}-{i}",
                time=when,
                payload=payload,
            )
        )
    project.events.append_many(events)
    project.events.flush()
