"""The CLI as a user runs it: the installed `conveyor` script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor.cli import parse_since
from conveyor.errors import InvalidInputError

CONVEYOR = str(Path(sys.executable).with_name("conveyor"))


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    full_env.update(env or {})
    return subprocess.run(
        [CONVEYOR, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    result = run("init", "proj", "--name", "fraud", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / "proj"


def test_version(tmp_path: Path) -> None:
    result = run("version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("conveyor 0.")


def test_init_writes_spec_and_records_an_event(project: Path) -> None:
    assert "project: fraud" in (project / "conveyor.yaml").read_text()
    result = run("events", "tail", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["kind"] for e in events] == ["project.initialized"]
    assert events[0]["subject"] == "fraud"
    again = run("init", ".", cwd=project)
    assert again.returncode == 1
    assert "already exists" in again.stderr and "--force" in again.stderr


def test_doctor_reports_every_seam_healthy_on_embedded_defaults(project: Path) -> None:
    result = run("doctor", "--json", cwd=project / ".conveyor")  # found by walking up
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads(result.stdout)
    assert body["ok"] is True
    assert body["project"] == "fraud"
    seams = [s["seam"] for s in body["seams"]]
    assert seams == ["store", "artifacts", "events", "cache", "ratelimit"]
    assert all(s["ok"] for s in body["seams"]), body


def test_doctor_names_host_and_port_of_an_unreachable_backend(project: Path) -> None:
    env = {"CONVEYOR_STORE": "postgresql://postgres:topsecret@127.0.0.1:1/test"}
    result = run("doctor", cwd=project, env=env)
    assert result.returncode == 1
    out = " ".join(result.stdout.split())  # the table wraps long lines
    assert "FAIL" in out
    assert "127.0.0.1:1" in out
    assert "topsecret" not in result.stdout + result.stderr
    body = json.loads(run("doctor", "--json", cwd=project, env=env).stdout)
    store = body["seams"][0]
    assert store["ok"] is False and "BackendUnavailableError" in store["detail"]
    assert all(s["ok"] for s in body["seams"][1:])


def test_doctor_on_missing_project_is_one_clear_line(tmp_path: Path) -> None:
    result = run("doctor", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no Conveyor project")
    assert "Traceback" not in result.stderr


def test_malformed_spec_names_file_line_and_field(project: Path) -> None:
    (project / "conveyor.yaml").write_text("project: fraud\nslos:\n  latency_p95_ms: fast\n")
    result = run("doctor", cwd=project)
    assert result.returncode == 1
    assert "conveyor.yaml:3: slos.latency_p95_ms" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_report_is_not_found_as_json(project: Path) -> None:
    result = run("reports", "show", "nope", "--json", cwd=project)
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "not_found"


def test_events_tail_filters(project: Path) -> None:
    from conveyor.project import Project

    with Project.open(project) as proj:
        for i in range(30):
            proj.events.emit("train.metric", subject="m", payload={"step": i})
        proj.events.emit("run.finished", subject="m", payload={"status": "succeeded"})
    result = run("events", "tail", "-n", "5", "--kind", "train.*", "--json", cwd=project)
    steps = [json.loads(line)["payload"]["step"] for line in result.stdout.splitlines()]
    assert steps == [25, 26, 27, 28, 29]
    result = run("events", "tail", "-n", "100", "--since", "1h", cwd=project)
    assert "run.finished" in result.stdout and "project.initialized" in result.stdout
    bad = run("events", "tail", "--since", "yesterday", cwd=project)
    assert bad.returncode == 1 and "--since 'yesterday'" in bad.stderr


def test_parse_since() -> None:
    now = datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_since("15m", now) == now - timedelta(minutes=15)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-01-30T08:00", now) == datetime(2026, 1, 30, 8, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(InvalidInputError):
        parse_since("soon")
