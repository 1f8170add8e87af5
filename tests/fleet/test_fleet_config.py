"""`conveyor fleet config | up | status | down`: the balancer's config as HAProxy and nginx
themselves check it, bad input refused with the field, and a fleet started and stopped by
the CLI from the project's spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cli_support import conveyor
from conveyor.errors import InvalidInputError
from conveyor.fleet.balancer import FleetPlan, Member, check, render
from conveyor.fleet.manager import Fleet
from conveyor.fleet.settings import FleetSpec
from conveyor.project import Project, init_project
from conveyor.testing.ports import worker_port


def _in_process(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (cli_support): for those that start nothing."""
    return conveyor(*args, "--project", str(root))


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args, "--project", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("balancer", ["haproxy", "nginx"])
def test_the_config_passes_the_balancers_own_check(tmp_path: Path, balancer: str) -> None:
    spec = FleetSpec(balancer=balancer, servers=3, port=9080)
    plan = FleetPlan.local(spec, tmp_path)
    text = render(plan)
    path = tmp_path / "lb.conf"
    path.write_text(text)
    check(plan, path)  # haproxy -c / nginx -t
    for port in (8100, 8101, 8102):
        assert f"127.0.0.1:{port}" in text
    if balancer == "haproxy":
        assert "option httpchk GET /v2/health/ready" in text  # active readiness checks
        assert "observe layer4 error-limit 3 on-error mark-down" in text  # passive
        assert "retry-on conn-failure empty-response" in text
        # idle server connections closed before the server's own 5 s keep-alive
        assert "timeout http-keep-alive 4000ms" in text
    else:
        assert "max_fails=3 fail_timeout=2s" in text
        assert "keepalive 64;" in text and "keepalive_timeout 4000ms;" in text
        assert "proxy_next_upstream error timeout http_502 non_idempotent;" in text


def test_a_config_the_balancer_refuses_is_a_config_error(tmp_path: Path) -> None:
    spec = FleetSpec(servers=1)
    bad = FleetPlan(spec, (Member("s0", "127.0.0.1", 8100, "no host here!"),), tmp_path)
    path = tmp_path / "haproxy.cfg"
    path.write_text(render(bad))
    with pytest.raises(Exception, match="haproxy refused"):
        check(bad, path)


def test_bad_options_are_refused_with_the_field(tmp_path: Path) -> None:
    init_project(tmp_path, name="bad")
    with pytest.raises(InvalidInputError, match=r"fleet\.servers"):
        Fleet.plan_for(tmp_path, {"servers": 0})
    with pytest.raises(InvalidInputError, match=r"fleet\.balancer"):
        Fleet.plan_for(tmp_path, {"balancer": "traefik"})
    done = _in_process(tmp_path, "fleet", "config", "--balancer", "traefik")
    assert done.returncode != 0
    assert "fleet.balancer" in done.stderr + done.stdout
    done = _in_process(tmp_path, "fleet", "status")
    assert done.returncode != 0
    assert "no fleet is running" in done.stderr + done.stdout


def test_the_cli_writes_the_config_and_runs_a_fleet(tmp_path: Path) -> None:
    init_project(tmp_path, name="cli")
    done = _in_process(
        tmp_path, "fleet", "config", "--balancer", "nginx", "--servers", "2", "--json"
    )
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)
    assert written["balancer"] == "nginx" and Path(written["config"]).is_file()
    with Project.open(tmp_path, env={}) as project:
        kinds = [e.kind for e in project.events.iter(kind=["fleet.configured"])]
    assert kinds == ["fleet.configured"]

    first = worker_port()  # the servers take first and first + 1, the balancer another
    port = worker_port()
    while port in (first, first + 1):
        port = worker_port()
    args = ("--servers", "2", "--port", str(port), "--server-port", str(first))
    done = _cli(tmp_path, "fleet", "up", *args, "--json")
    try:
        assert done.returncode == 0, done.stderr + done.stdout
        # The project is on SQLite and memory: the CLI says what that means for a fleet.
        assert "LISTEN/NOTIFY" in done.stderr and "per server process" in done.stderr
        status = json.loads(_in_process(tmp_path, "fleet", "status", "--json").stdout)
        assert status["balancer"]["running"] and status["balancer"]["kind"] == "haproxy"
        assert [s["running"] for s in status["servers"]] == [True, True]
        # Nothing deployed: every server says so (not ready), so the balancer sends nothing.
        assert {s["status"] for s in status["servers"]} == {"empty"}
        assert "nothing is deployed" in done.stderr
        answer = httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=5)
        assert answer.status_code == 503  # HAProxy: no server available
    finally:
        stopped = _cli(tmp_path, "fleet", "down")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped 2 servers and haproxy" in stopped.stdout
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=5)
