"""Experiments over a real store and event log: refusals at start, the route split with
sticky assignment, reports on seeded traffic (ship, keep running, SRM, a guardrail),
stop; the report saved as a Report of CheckResults and the decisions audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from experiment_support import ab_traffic, make_project

from conveyor.errors import AlreadyExistsError, ConflictError, InvalidInputError, NotFoundError
from conveyor.project import Project
from conveyor.serving.route_store import RouteStore

ARMS = {"control": 1, "treatment": 2}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with make_project(tmp_path) as proj:
        yield proj


@pytest.fixture(params=["sqlite", "postgresql"])
def any_project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """The project on SQLite, and with its store and event log on PostgreSQL."""
    if request.param == "sqlite":
        with make_project(tmp_path) as proj:
            yield proj
        return
    pg_url = request.getfixturevalue("pg_url")
    with make_project(tmp_path, env={"CONVEYOR_STORE": pg_url, "CONVEYOR_EVENTS": pg_url}) as proj:
        yield proj


def _start(project: Project, name: str = "exp", **extra: object) -> object:
    options: dict = {"primary": "conversion", "baseline": 0.10, "mde": 0.02, **extra}
    return project.experiments.start(name, "m", ARMS, actor="ana", **options)


def _kinds(project: Project) -> list[str]:
    return [e.kind for e in project.events.iter(subject="m") if e.kind.startswith("experiment.")]


def test_an_arm_on_a_missing_version_is_refused_and_nothing_changes(project: Project) -> None:
    before = RouteStore(project.store, None).get("m")
    with pytest.raises(NotFoundError, match=r"treatment.*m@9"):
        project.experiments.start(
            "exp",
            "m",
            {"control": 1, "treatment": 9},
            primary="conversion",
            baseline=0.1,
            mde=0.02,
            actor="ana",
        )
    assert RouteStore(project.store, None).get("m").revision == before.revision
    assert project.experiments.list() == []
    assert _kinds(project) == []


@pytest.mark.parametrize(
    ("arms", "extra", "field"),
    [
        ({"only": 1}, {}, "arms"),
        ({"a": 1, "b": 2, "c": 3}, {}, "arms"),
        ({"a": 1, "b": 2}, {"primary": "clicks"}, "metric"),
        ({"a": 1, "b": 2}, {"baseline": None}, "baseline"),
        ({"a": 1, "b": 2}, {"primary": "revenue"}, "sd"),
        ({"a": 1, "b": 2}, {"guardrails": ["conversion"]}, "guardrails"),
        ({"a": 1, "b": 2}, {"guardrails": ["latency"]}, "metric"),
    ],
)
def test_bad_designs_are_refused(project: Project, arms: dict, extra: dict, field: str) -> None:
    options: dict = {"primary": "conversion", "baseline": 0.10, "mde": 0.02, **extra}
    with pytest.raises(InvalidInputError) as err:
        project.experiments.start("exp", "m", arms, actor="ana", **options)
    assert err.value.context["field"] == field


def test_start_splits_the_route_and_plans_the_sample_size(project: Project) -> None:
    started = _start(project, guardrails=["error_rate", "p95_latency"])
    policy = RouteStore(project.store, None).get("m").policy
    assert policy.mode == "ab" and policy.sticky_header == "x-user-id"
    assert [(a.label, a.version, a.weight) for a in policy.versions] == [
        ("control", 1, 50.0),
        ("treatment", 2, 50.0),
    ]
    # 10 % -> 12 % at 80 % power, the fixed test at 0.04 (0.01 left to the early stop)
    assert started.design["planned_n"] == 4103
    assert _kinds(project) == ["experiment.started"]
    with pytest.raises(AlreadyExistsError):
        _start(project)
    with pytest.raises(ConflictError, match="already runs experiment 'exp'"):
        _start(project, name="other")


def test_an_existing_ab_route_is_adopted(project: Project) -> None:
    from conveyor.serving.routes import Arm, RoutePolicy

    routes = RouteStore(project.store, project.events, project.registry)
    live = routes.set(
        "m",
        RoutePolicy(
            mode="ab",
            versions=[
                Arm(version=1, weight=70, arm="control"),
                Arm(version=2, weight=30, arm="treatment"),
            ],
            sticky_header="x-session",
        ),
    )
    started = _start(project)
    assert started.route_revision == live.revision
    assert routes.get("m").revision == live.revision
    assert started.design["adopted_route"] and started.design["weights"] == [70.0, 30.0]


def test_aa_keeps_running_and_a_real_lift_ships(project: Project) -> None:
    from conveyor.checks.persist import get_report

    _start(project, guardrails=["error_rate"])
    ab_traffic(project, arms=ARMS, n=2000, rates={"control": 0.1, "treatment": 0.1}, seed=1)
    body = project.experiments.report("exp")
    assert body["recommendation"] == "keep running", body["reason"]
    assert not body["srm"]["mismatch"]
    primary = body["primary"]
    assert primary["control"]["n"] + primary["treatment"]["n"] == 2000
    low, high = primary["sequential"]["ci"]
    assert low < 0 < high
    saved = get_report(project.store, body["report_id"])
    assert saved.kind == "experiment" and saved.passed
    assert {c.name for c in saved.checks} >= {"sample_ratio", "guardrail:error_rate"}
    assert "experiment.concluded" not in _kinds(project)

    # a big lift, enough traffic: the always-valid test stops it early
    ab_traffic(project, arms=ARMS, n=8000, rates={"control": 0.1, "treatment": 0.2}, seed=2)
    body = project.experiments.report("exp")
    assert body["recommendation"] == "ship", body["reason"]
    assert body["primary"]["sequential"]["ci"][0] > 0
    assert _kinds(project).count("experiment.concluded") == 1
    project.experiments.report("exp")  # concluded once, not on every report
    assert _kinds(project).count("experiment.concluded") == 1
    found = project.experiments.get("exp")
    assert found.to_dict()["last_report"]["recommendation"] == "ship"


def test_sample_ratio_mismatch_means_do_not_ship(project: Project) -> None:
    _start(project)
    ab_traffic(
        project,
        arms=ARMS,
        n=3000,
        rates={"control": 0.1, "treatment": 0.1},
        shares={"control": 0.56, "treatment": 0.44},
        seed=3,
    )
    body = project.experiments.report("exp", save=False)
    assert body["srm"]["mismatch"]
    assert body["recommendation"] == "do not ship"
    assert body["reason"].startswith("sample ratio mismatch")
    assert "report_id" not in body


def test_a_worse_guardrail_means_do_not_ship(any_project: Project) -> None:
    project = any_project
    _start(project, guardrails=["error_rate"])
    ab_traffic(
        project,
        arms=ARMS,
        n=4000,
        rates={"control": 0.1, "treatment": 0.2},
        error_rates={"treatment": 0.08},
        seed=4,
    )
    body = project.experiments.report("exp")
    [guard] = body["guardrails"]
    assert guard["name"] == "error_rate" and guard["worse"]
    assert body["recommendation"] == "do not ship"
    assert "error_rate" in body["reason"]


def test_a_slower_arm_fails_the_p95_guardrail_and_an_equal_one_passes(project: Project) -> None:
    _start(project, guardrails=["p95_latency"])
    ab_traffic(project, arms=ARMS, n=3000, rates={"control": 0.1, "treatment": 0.1}, seed=6)
    [same] = project.experiments.report("exp", save=False)["guardrails"]
    assert not same["worse"]
    assert same["control"]["mean"] == pytest.approx(0.05, abs=0.01)  # by construction
    # then the treatment gets 50 % slower
    ab_traffic(
        project,
        arms=ARMS,
        n=3000,
        rates={"control": 0.1, "treatment": 0.1},
        slow={"treatment": 1.5},
        seed=7,
    )
    body = project.experiments.report("exp", save=False)
    [slower] = body["guardrails"]
    assert slower["worse"] and slower["treatment"]["mean"] > 0.15
    assert body["recommendation"] == "do not ship" and "p95_latency" in body["reason"]


def test_stop_serves_the_winner(project: Project) -> None:
    _start(project)
    with pytest.raises(InvalidInputError):
        project.experiments.stop("exp", actor="ana", winner="nobody")
    stopped = project.experiments.stop("exp", actor="ana", winner="treatment", reason="won")
    assert stopped.status == "stopped"
    policy = RouteStore(project.store, None).get("m").policy
    assert policy.mode == "fixed" and policy.serving_versions() == (2,)
    assert policy.sticky_header == "x-user-id"
    with pytest.raises(ConflictError):
        project.experiments.stop("exp", actor="ana")
    assert _kinds(project) == ["experiment.started", "experiment.stopped"]
    with pytest.raises(NotFoundError):
        project.experiments.get("nope")


def test_revenue_is_a_mean_with_welch_and_accuracy_a_model_metric(project: Project) -> None:
    import numpy as np
    from scipy import stats as sp

    project.experiments.start(
        "rev",
        "m",
        ARMS,
        primary="revenue",
        sd=30.0,
        mde=2.0,
        actor="ana",
        guardrails=["accuracy"],
    )
    ab_traffic(
        project,
        arms=ARMS,
        n=3000,
        rates={"control": 0.3, "treatment": 0.3},
        revenue={"control": 50.0, "treatment": 50.0},
        outputs={"control": 0.9, "treatment": 0.6},
        seed=5,
    )
    body = project.experiments.report("rev", save=False)
    primary = body["primary"]
    assert primary["kind"] == "mean"
    # the accuracy guardrail is worse in the treatment arm (below): do not ship
    assert body["recommendation"] == "do not ship" and "accuracy" in body["reason"]
    # the same Welch test scipy computes on the per-request revenue
    from conveyor.experiments.data import read_arms

    found = project.experiments.get("rev")
    data = read_arms(project, "m", found.labels, ["revenue"], since=found.started_at)
    values = data.outcomes["revenue"]
    theirs = sp.ttest_ind(values[data.arm == 1], values[data.arm == 0], equal_var=False)
    assert primary["fixed_horizon"]["p_value"] == pytest.approx(theirs.pvalue)
    assert primary["control"]["mean"] == pytest.approx(np.mean(values[data.arm == 0]))
    # accuracy (the registry's metric per labelled request): 0.9 against 0.6, worse
    [guard] = body["guardrails"]
    assert guard["name"] == "accuracy"
    assert guard["control"]["mean"] == pytest.approx(0.9, abs=0.03)
    assert guard["treatment"]["mean"] == pytest.approx(0.6, abs=0.03)
    assert guard["worse"]
