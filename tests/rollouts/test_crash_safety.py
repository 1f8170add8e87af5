"""Crash safety: ``conveyor rollout run`` killed (SIGKILL) mid-step; a second controller
is refused the lease while the first holds it, and once the lease lapses the next
controller resumes the rollout at the same step and window (the route is not moved
again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from rollout_support import make_project

from conveyor.project import Project
from conveyor.serving.route_store import RouteStore
from conveyor.testing.wait import wait_until

CONVEYOR = str(Path(sys.executable).parent / "conveyor")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return env


def _once(root: Path, holder: str) -> list[dict]:
    done = subprocess.run(
        [CONVEYOR, "rollout", "run", "--once", "--holder", holder, "--lease", "2", "--json"],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    items: list[dict] = json.loads(done.stdout)["items"]
    return items


def test_a_killed_controller_is_resumed_at_the_same_step(tmp_path: Path) -> None:
    with make_project(tmp_path) as project:
        started = project.rollouts.start("m", 2, actor="ana", steps="10,100", interval="1h")
    child = subprocess.Popen(
        [CONVEYOR, "rollout", "run", "--holder", "first", "--poll", "0.2", "--lease", "2"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Project.open(tmp_path, env={}) as project:

            def applied() -> bool:
                found = project.rollouts.get(started.id)
                return found.step_started_at is not None and found.lease_holder == "first"

            wait_until(applied, timeout=60, message="the first controller applies step 1")
            before = project.rollouts.get(started.id)
            revision = RouteStore(project.store, None).get("m").revision
            # while the first one runs, a second controller is refused the lease
            [held] = _once(tmp_path, "second")
            assert held["action"] == "held" and "held by first" in held["detail"]
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)

            def lapsed() -> bool:
                [result] = _once(tmp_path, "second")
                return result["action"] == "waiting"

            wait_until(lapsed, timeout=30, message="the lease lapses and second takes it")
            after = project.rollouts.get(started.id)
            assert after.lease_holder == "second"
            assert after.status == "running" and after.step_index == before.step_index == 0
            assert after.step_started_at == before.step_started_at  # the same window
            assert RouteStore(project.store, None).get("m").revision == revision  # not re-set
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
