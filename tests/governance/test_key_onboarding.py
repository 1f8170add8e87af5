"""A new user's first keys: the first key must be an admin (a first predictor key would
lock every command with no admin left to make another), creating it says what comes next,
and every refusal names the command, the action and the role, and how to get a key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import cli_support
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer


@pytest.fixture
def root(tmp_path: Path) -> Path:
    init_project(tmp_path / "p", name="onboarding")
    return tmp_path / "p"


def conveyor(root: Path, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    if key is not None:
        env["CONVEYOR_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def in_process(root: Path, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """The same command in this process (cli_support)."""
    return cli_support.conveyor(
        *args, cwd=root, env={} if key is None else {"CONVEYOR_API_KEY": key}
    )


def _token(out: str) -> str:
    (token,) = [line for line in out.splitlines() if line.startswith("cvy_")]
    return token


def test_the_first_key_must_be_an_admin_and_says_what_comes_next(root: Path) -> None:
    first = conveyor(root, "keys", "create", "server", "--role", "predictor")
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
    assert first.stderr.startswith("error: the project's first key must be an admin key")
    assert "`conveyor keys create admin --role admin`" in first.stderr
    assert "`conveyor keys create server --role predictor`" in first.stderr
    with Project.open(root, env={}) as project:
        assert not ApiKeys(project.store, None).any()  # nothing was created: still open

    admin = conveyor(root, "keys", "create", "admin", "--role", "admin")
    assert admin.returncode == 0, admin.stderr
    assert "export CONVEYOR_API_KEY=" in admin.stderr
    assert "`conveyor keys create NAME --role predictor`" in admin.stderr
    server = conveyor(
        root, "keys", "create", "server", "--role", "predictor", key=_token(admin.stdout)
    )
    assert server.returncode == 0, server.stderr
    assert "export CONVEYOR_API_KEY" not in server.stderr  # said once, for the first key


def test_a_locked_command_names_itself_its_action_and_the_key_to_create(root: Path) -> None:
    with Project.open(root, env={}) as project:
        keys = ApiKeys(project.store, project.events)
        keys.create("admin", "admin")
        predictor, _ = keys.create("server", "predictor")
    for command, action in (
        (("train", "risk"), "training.train"),
        (("data", "ingest", "loans"), "data.ingest"),
        (("deploy", "risk@1"), "serving.deploy"),
    ):
        nobody = in_process(root, *command)
        assert nobody.returncode == 1, nobody.stderr
        assert nobody.stderr.strip() == (
            f"error: no API key: `conveyor {' '.join(command[:-1])}` ('{action}') needs a key "
            "with the role 'deployer' or higher; set CONVEYOR_API_KEY to one (this project "
            "has API keys); an admin creates one with `conveyor keys create NAME --role "
            "deployer`"
        )
        low = in_process(root, *command, key=predictor)
        assert low.returncode == 1
        assert low.stderr.strip() == (
            f"error: `conveyor {' '.join(command[:-1])}`: '{action}' needs the role "
            "'deployer' or higher; this key's role is 'predictor'"
        )


def test_the_servers_401_names_the_role_to_create(root: Path) -> None:
    with Project.open(root, env={}) as project:
        ApiKeys(project.store, project.events).create("admin", "admin")
        with ThreadedServer(create_app(project)) as server:
            answer = httpx.post(f"{server.url}/v1/models/m/predict", json={"records": []})
    assert answer.status_code == 401
    assert answer.json()["message"] == (
        "no API key: 'serving.predict' needs a key with the role 'predictor' or higher; send "
        "one as 'Authorization: Bearer cvy_...'; an admin creates one with "
        "`conveyor keys create NAME --role predictor`"
    )
