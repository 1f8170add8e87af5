"""The CLI as a user runs it: the installed `conveyor` script in a subprocess (its version
and a missing project), the rest the command main() runs, in process (cli_support)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli_support import conveyor
from conveyor.cli import parse_since
from conveyor.cli.common import parse_duration
from conveyor.errors import InvalidInputError

CONVEYOR = str(Path(sys.executable).with_name("conveyor"))


def run_installed(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    full_env.update(env or {})
    return subprocess.run(
        [CONVEYOR, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120
    )


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return conveyor(*args, cwd=cwd, env=env)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    result = run("init", "proj", "--name", "fraud", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / "proj"


def test_version(tmp_path: Path) -> None:
    result = run_installed("version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("conveyor 0.")


def test_init_writes_spec_and_records_an_event(project: Path) -> None:
    assert "project: fraud" in (project / "conveyor.yaml").read_text()
    result = run("events", "tail", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["next_cursor"] is None
    events = body["items"]
    assert [e["kind"] for e in events] == ["project.initialized"]
    assert events[0]["subject"] == "fraud" and events[0]["actor"].startswith("cli")
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
    assert seams == ["store", "artifacts", "events", "cache", "ratelimit", "online"]
    assert all(s["ok"] for s in body["seams"]), body


def test_doctor_names_host_and_port_of_an_unreachable_backend(project: Path) -> None:
    env = {"CONVEYOR_STORE": "postgresql://postgres:topsecret@127.0.0.1:1/test"}
    result = run("doctor", cwd=project, env=env)
    assert result.returncode == 3  # a check failed
    out = " ".join(result.stdout.split())  # the table wraps long lines
    assert "FAIL" in out
    assert "127.0.0.1:1" in out
    assert "topsecret" not in result.stdout + result.stderr
    failed = run("doctor", "--json", cwd=project, env=env)
    assert failed.returncode == 3
    body = json.loads(failed.stdout)
    store = body["seams"][0]
    assert store["ok"] is False and "BackendUnavailableError" in store["detail"]
    assert all(s["ok"] for s in body["seams"][1:])


def test_doctor_on_missing_project_is_one_clear_line(tmp_path: Path) -> None:
    result = run_installed("doctor", cwd=tmp_path)
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
    steps = [e["payload"]["step"] for e in json.loads(result.stdout)["items"]]
    assert steps == [25, 26, 27, 28, 29]
    result = run("events", "tail", "-n", "100", "--since", "1h", cwd=project)
    assert "run.finished" in result.stdout and "project.initialized" in result.stdout
    bad = run("events", "tail", "--since", "yesterday", cwd=project)
    assert bad.returncode == 1 and "--since 'yesterday'" in bad.stderr


def test_parse_since() -> None:
    now = datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_since("15m", now) == now - timedelta(minutes=15)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("1h30m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-01-30T08:00", now) == datetime(2026, 1, 30, 8, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(InvalidInputError, match="--since 'soon'"):
        parse_since("soon")
    with pytest.raises(InvalidInputError, match="--at 'soon'"):
        parse_since("soon", option="--at")
    with pytest.raises(InvalidInputError, match="too long ago"):
        parse_since("999999d", now)


def test_parse_duration_one_grammar() -> None:
    assert parse_duration("45s", "--x") == timedelta(seconds=45)
    assert parse_duration("30m", "--x") == timedelta(minutes=30)
    assert parse_duration("12h", "--x") == timedelta(hours=12)
    assert parse_duration("7d", "--x") == timedelta(days=7)
    assert parse_duration("2w", "--x") == timedelta(weeks=2)
    assert parse_duration(" 1h30m ", "--x") == timedelta(minutes=90)
    assert parse_duration("0.05s", "--x") == timedelta(milliseconds=50)
    for bad in ("90", "7 days", "7D", "-1d", "0s", "1h 30m", "", "d", "1e3s", "9" * 30 + "w"):
        with pytest.raises(InvalidInputError) as caught:
            parse_duration(bad, "--stale-after")
        assert caught.value.message.startswith(f"--stale-after {bad!r}:")
        assert caught.value.context["field"] == "stale_after"
    with pytest.raises(InvalidInputError, match=r"45s, 30m, 12h, 7d or 2w"):
        parse_duration("soon", "--expires")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("smhdw")), min_size=1))
def test_parse_duration_adds_its_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    seconds = sum(n * _UNITS[unit] for n, unit in parts)
    if seconds == 0:
        with pytest.raises(InvalidInputError):
            parse_duration(text, "--x")
    else:
        assert parse_duration(text, "--x") == timedelta(seconds=seconds)


@given(st.text(max_size=12))
def test_parse_duration_accepts_or_refuses_clearly(text: str) -> None:
    try:
        span = parse_duration(text, "--x")
    except InvalidInputError as exc:
        message = exc.message
    else:
        assert span > timedelta(0)
        return
    assert message.startswith(f"--x {text!r}: ")
