"""The controller over a real store and event log, one tick at a time with a clock the
test moves: steps move the route, a bad step rolls back (report, event, alert), a good
rollout promotes the alias, too little traffic extends then fails, refusals, a manual
route change, the lease, shadow and flag steps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rollout_support import Clock, make_project, traffic

from conveyor.errors import ConflictError, GateFailedError, InvalidInputError
from conveyor.project import Project
from conveyor.rollouts.controller import Rollouts
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy


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
    env = {"CONVEYOR_STORE": pg_url, "CONVEYOR_EVENTS": pg_url}
    with make_project(tmp_path, env=env) as proj:
        yield proj


def _route(project: Project) -> RoutePolicy:
    return RouteStore(project.store, None).get("m").policy


def _kinds(project: Project, prefix: str) -> list[str]:
    return [e.kind for e in project.events.iter(subject="m") if e.kind.startswith(prefix)]


def test_a_bad_canary_is_rolled_back_at_the_first_step(any_project: Project) -> None:
    from conveyor.checks.persist import get_report
    from conveyor.monitoring.alerts.store import SqlStore

    project = any_project
    clock = Clock()
    rollouts = Rollouts(project, clock=clock)
    started = rollouts.start("m", 2, actor="ana", steps="5,50,100", interval="10m")
    [applied] = rollouts.tick("ctl")
    assert applied.action == "applied"
    policy = _route(project)
    assert policy.mode == "canary"
    assert {a.version: a.weight for a in policy.versions} == {1: 95.0, 2: 5.0}
    traffic(project, since=clock.at, seconds=600, rate=20, share=0.05, error_rate=0.05)
    clock.advance(minutes=5)
    assert rollouts.tick("ctl")[0].action == "waiting"
    clock.advance(minutes=5)
    [judged] = rollouts.tick("ctl")
    assert judged.action == "rolled_back", judged
    assert judged.detail.startswith("error_rate")
    assert _route(project) == RoutePolicy.fixed(1)
    done = rollouts.get(started.id)
    assert done.status == "rolled_back" and done.step_index == 0
    report = get_report(project.store, done.doc["reports"][-1])
    assert [c.name for c in report.failures] == ["error_rate"]
    assert "rollout.rolled_back" in _kinds(project, "rollout.")
    alerts = SqlStore(project.store).incidents()
    assert [a.rule for a in alerts] == ["rollout_rolled_back"]
    assert alerts[0].labels["rollout"] == started.id
    assert project.registry.aliases("m")["champion"] == 1


def test_a_good_candidate_is_promoted_step_by_step(project: Project) -> None:
    clock = Clock()
    rollouts = Rollouts(project, clock=clock)
    started = rollouts.start(
        "m", 2, actor="ana", steps="10,50,100", interval="10m", min_requests=100
    )
    for seed, share in enumerate((0.1, 0.5, 1.0)):
        assert rollouts.tick("ctl")[0].action in ("applied", "waiting")
        traffic(project, since=clock.at, seconds=600, rate=5, share=share, seed=seed)
        clock.advance(minutes=10)
        [result] = rollouts.tick("ctl")
        assert result.action == ("promoted" if share == 1.0 else "passed"), result
        if share < 1.0:
            weights = {a.version: a.weight for a in _route(project).versions}
            assert weights[2] == {0.1: 50.0, 0.5: 100.0}[share]
    done = rollouts.get(started.id)
    assert done.status == "promoted" and len(done.doc["reports"]) == 3
    assert _route(project) == RoutePolicy.fixed(2)
    assert project.registry.aliases("m")["champion"] == 2
    assert _kinds(project, "rollout.").count("rollout.step_passed") == 3
    assert "rollout.promoted" in _kinds(project, "rollout.")


def test_too_little_traffic_extends_the_step_then_fails_with_the_reason(
    project: Project,
) -> None:
    clock = Clock()
    rollouts = Rollouts(project, clock=clock)
    rollouts.start("m", 2, actor="ana", steps="1,100", interval="1m", max_extensions=2)
    rollouts.tick("ctl")
    actions = []
    for _ in range(3):
        clock.advance(minutes=1)
        actions.append(rollouts.tick("ctl")[0].action)
    assert actions == ["extended", "extended", "rolled_back"]
    done = rollouts.get("m")
    assert done.reason is not None and done.reason.startswith("traffic never came: 0 of 300")
    assert _route(project) == RoutePolicy.fixed(1)


def test_refusals(project: Project) -> None:
    rollouts = Rollouts(project, clock=Clock())
    with pytest.raises(GateFailedError, match="failed its gates"):
        rollouts.start("m", 3, actor="ana")
    with pytest.raises(InvalidInputError, match="--reason"):
        rollouts.start("m", 3, actor="ana", force=True)
    with pytest.raises(InvalidInputError, match="last step must be 100"):
        rollouts.start("m", 2, actor="ana", steps="1,5")
    with pytest.raises(InvalidInputError, match="already the stable"):
        rollouts.start("m", 1, actor="ana")
    forced = rollouts.start("m", 3, actor="ana", force=True, reason="hotfix, gates rerun")
    assert forced.doc["forced"] and forced.doc["force_reason"] == "hotfix, gates rerun"
    started = [e for e in project.events.iter(kind="rollout.started")]
    assert started[-1].payload["force_reason"] == "hotfix, gates rerun"
    with pytest.raises(ConflictError, match=forced.id):
        rollouts.start("m", 2, actor="ana")
    aborted = rollouts.abort("m", actor="ana", reason="changed my mind")
    assert aborted.status == "aborted"
    with pytest.raises(ConflictError, match="aborted"):
        rollouts.pause(aborted.id, actor="ana")


def test_a_manual_route_change_pauses_the_rollout_instead_of_being_overwritten(
    project: Project,
) -> None:
    clock = Clock()
    rollouts = Rollouts(project, clock=clock)
    rollouts.start("m", 2, actor="ana", steps="10,50,100", interval="1m", min_requests=5)
    rollouts.tick("ctl")
    traffic(project, since=clock.at, seconds=60, rate=5, share=0.1)
    manual = RoutePolicy.canary(1, 2, 20)
    RouteStore(project.store, project.events, project.registry).set("m", manual, actor="bob")
    clock.advance(minutes=1)
    assert rollouts.tick("ctl")[0].action == "conflict"  # the next step met bob's change
    paused = rollouts.get("m")
    assert paused.status == "paused" and "changed by someone else" in (paused.reason or "")
    assert _route(project) == manual
    resumed = rollouts.resume("m", actor="ana")
    assert resumed.status == "running"
    assert rollouts.tick("ctl")[0].action == "applied"
    assert {a.version: a.weight for a in _route(project).versions} == {1: 90.0, 2: 10.0}


def test_two_controllers_never_drive_one_rollout(any_project: Project) -> None:
    project = any_project
    clock = Clock()
    rollouts = Rollouts(project, clock=clock)
    rollouts.start("m", 2, actor="ana", steps="10,100", interval="10m")
    assert rollouts.tick("a", lease_s=30)[0].action == "applied"
    held = rollouts.tick("b", lease_s=30)[0]
    assert held.action == "held" and "held by a" in held.detail
    clock.advance(seconds=31)  # a's lease lapsed: b takes over at the same step
    taken = rollouts.tick("b", lease_s=30)[0]
    assert taken.action == "waiting" and taken.step == 0
    assert rollouts.get("m").lease_holder == "b"


def test_pause_resume_promote_by_hand(project: Project) -> None:
    clock = Clock()
    rollouts = Rollouts(project, clock=clock)
    rollouts.start("m", 2, actor="ana", steps="10,50,100", interval="10m")
    rollouts.tick("ctl")
    assert rollouts.pause("m", actor="ana").status == "paused"
    clock.advance(hours=1)
    assert rollouts.tick("ctl")[0].action == "paused"
    rollouts.resume("m", actor="ana")
    promoted = rollouts.promote("m", actor="ana")
    assert promoted.status == "promoted"
    assert _route(project) == RoutePolicy.fixed(2)
    assert project.registry.aliases("m")["champion"] == 2


def test_shadow_then_flags_then_percent(project: Project) -> None:
    from datetime import timedelta

    from conveyor.events.schema import Event

    clock = Clock()
    rollouts = Rollouts(project, clock=clock)
    rollouts.start(
        "m",
        2,
        actor="ana",
        steps="shadow,flag:internal:group=internal,flag:beta:group=beta:50,100",
        interval="10m",
        min_requests=20,
    )
    rollouts.tick("ctl")
    shadow = _route(project)
    assert shadow.mode == "fixed" and shadow.shadow == [2]
    events = [
        Event(
            "prediction.shadow",
            subject="m",
            subject_version="2",
            time=clock.at + timedelta(seconds=i),
            payload={
                "primary_version": 1,
                "primary_output": [1.0],
                "output": [1.0 if i % 10 else 2.0],
                "agree": bool(i % 10),
                "compared": 1,
                "differing": 0 if i % 10 else 1,
                "max_abs_diff": 0.0,
                "mean_abs_diff": 0.0,
                "status": "ok",
                "error": None,
                "latency_ms": 20.0,
            },
        )
        for i in range(100)
    ]
    project.events.append_many(events)
    project.events.flush()
    traffic(project, since=clock.at, seconds=600, rate=1, share=0.0)
    clock.advance(minutes=10)
    [judged] = rollouts.tick("ctl")
    # 90 % agreement is below min_agreement (95 %): the shadow phase fails
    assert judged.action == "rolled_back" and "shadow_agreement" in judged.detail

    rollouts.start(
        "m", 2, actor="ana", steps="flag:internal:group=internal,flag:beta:group=beta:50,100"
    )
    rollouts.tick("ctl")
    flags = _route(project).flags
    assert [(f.name, f.match, f.percent, f.version) for f in flags] == [
        ("internal", {"group": "internal"}, 100.0, 2)
    ]


def test_a_candidate_worse_on_feedback_labels_is_rolled_back(project: Project) -> None:
    """Quality per arm from monitoring's quality code: the candidate's answers are as
    confident as stable's, but 40 % of its labels disagree."""
    import random
    from datetime import timedelta

    from conveyor.events.schema import Event
    from conveyor.monitoring.feedback import record_feedback

    clock = Clock()
    rollouts = Rollouts(project, clock=clock)
    rollouts.start("m", 2, actor="ana", steps="50,100", interval="10m", min_requests=150)
    rollouts.tick("ctl")
    rng = random.Random(7)
    events, labels = [], []
    for i in range(600):
        version = "2" if i % 2 else "1"
        p = rng.betavariate(0.3, 0.3)
        y = int(rng.random() < p)
        if version == "2" and rng.random() < 0.4:
            y = 1 - y
        rid = f"q-{i}"
        events.append(
            Event(
                "prediction",
                subject="m",
                subject_version=version,
                request_id=rid,
                time=clock.at + timedelta(seconds=i),
                payload={
                    "version_id": f"m-v{version}",
                    "arm": f"v{version}",
                    "flag": None,
                    "latency_ms": 20.0 + rng.random(),
                    "cached": False,
                    "rows": 1,
                    "output": [[1 - p, p]],
                },
            )
        )
        labels.append({"request_id": rid, "label": y})
    project.events.append_many(events)
    project.events.flush()
    record_feedback(project, labels)
    clock.advance(minutes=10)
    [judged] = rollouts.tick("ctl")
    assert judged.action == "rolled_back", judged
    assert judged.detail.startswith("quality:"), judged.detail
