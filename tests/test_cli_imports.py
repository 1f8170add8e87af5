"""The CLI starts fast because it imports only what the command needs: the modules each
entry point loads are checked (not the time, which a shared machine makes noise of)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Never needed to print help or to move a route back.
NEVER = (
    "numpy",
    "pandas",
    "pyarrow",
    "sklearn",
    "scipy",
    "duckdb",
    "fsspec",
    "httpx",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "opentelemetry",
    "redis",
    "psycopg",
    "alembic",
    "conveyor.web",
    "conveyor.artifacts",
    "conveyor.serving.app",
    "conveyor.serving.pool",
    "conveyor.training.flow",
    "conveyor.data.layer",
)
#: Help lists commands: it opens no project.
NOT_FOR_HELP = (
    "sqlalchemy",
    "pydantic",
    "yaml",
    "asyncio",
    "conveyor.project",
    "conveyor.store",
    "typer.rich_utils",  # rich help costs more than the rest of --help
    "importlib.metadata",  # entry points are read by conveyor._entry_points
    "email",
)
#: Asking a server (``--url``) opens no project and builds no route model.
NOT_FOR_A_SERVER = (
    "sqlalchemy",
    "yaml",
    "conveyor.project",
    "conveyor.store",
    "conveyor.serving.routes",
    "conveyor.config",
)

_RUN = """
import json, runpy, sys
sys.argv = ["conveyor", *json.loads(sys.argv[1])]
try:
    runpy.run_module("conveyor.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\nMODULES " + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _modules(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, set[str], str]:
    out = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **(env or {})},
    ).stdout
    printed, _, tail = out.rpartition("\nMODULES ")
    found = json.loads(tail)
    return found["code"], set(found["modules"]), printed


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


def test_help_imports_no_project_machinery(tmp_path: Path) -> None:
    code, modules, printed = _modules(["--help"], tmp_path)
    assert code == 0 and "rollback" in printed
    assert _loaded(modules, NEVER + NOT_FOR_HELP) == []


@pytest.fixture
def routed(tmp_path: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent / "serving"))
    from serving_support import linear_project

    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    project = linear_project(tmp_path, name="fast", scales=(1.0, 2.0))
    RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(2))
    project.close()
    return tmp_path


def test_rollback_imports_only_the_store_and_the_route(routed: Path) -> None:
    code, modules, printed = _modules(["rollback", "m", "--reason", "drill"], routed)
    assert code == 0 and "rolled back m revision 3: fixed: v1" in printed, printed
    assert _loaded(modules, NEVER) == []
    # On SQLite the PostgreSQL dialect is not loaded either.
    assert "sqlalchemy.dialects.postgresql" not in modules


def test_one_command_builds_only_its_own_parameters(routed: Path) -> None:
    """main() mounts the invoked command alone (typer builds every mounted command's
    parameters first); a misspelt one still gets click's suggestion."""
    from conveyor.cli import _only_invoked, app

    def names(typer_app: Any) -> set[str]:
        import typer

        return {
            c.name or typer.main.get_command_name(c.callback.__name__)
            for c in typer_app.registered_commands
        } | {g.name for g in typer_app.registered_groups if g.name}

    assert names(_only_invoked(app, ["rollback", "m"])) == set()
    (nameless,) = _only_invoked(app, ["rollback", "m"]).registered_groups
    assert names(nameless.typer_instance) == {"rollback"}
    assert names(_only_invoked(app, ["data", "ingest"])) == {"data"}
    assert _only_invoked(app, ["--verbose"]) is app and _only_invoked(app, ["rolback"]) is app
    code, _, printed = _modules(["route", "show", "m"], routed)
    assert code == 0 and "revision 2" in printed


@pytest.fixture
def served(routed: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A server of the routed project, and keys of each role that matters."""
    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    with Project.open(routed) as project:
        keys = ApiKeys(project.store, project.events)
        tokens = {
            role: keys.create(role, role)[0]
            for role in ("admin", "deployer", "predictor", "viewer")
        }
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            yield server.url, tokens
        finally:
            server.stop()


def test_rollback_through_a_server_opens_no_project(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, tokens = served
    import httpx

    def served_version() -> int:
        answer = httpx.post(
            f"{url}/v1/models/m/predict",
            json={"records": [{"a": 1.0, "b": 1.0}]},
            headers={"authorization": f"Bearer {tokens['predictor']}"},
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["version"])

    assert served_version() == 2
    # From a folder with no project at all: only the server, the key and the model.
    code, modules, printed = _modules(
        ["rollback", "m", "--url", url, "--reason", "drill"],
        tmp_path,
        {"CONVEYOR_API_KEY": tokens["deployer"]},
    )
    assert code == 0 and "rolled back m revision 3: fixed: v1" in printed, printed
    assert _loaded(modules, NEVER + NOT_FOR_A_SERVER) == []
    assert served_version() == 1  # this server switched before it answered
    history = httpx.get(
        f"{url}/v1/models/m/route", headers={"authorization": f"Bearer {tokens['viewer']}"}
    ).json()
    assert history["reason"].endswith("drill") and history["actor"] == "key:deployer"


def test_rollback_through_a_server_reports_its_typed_errors(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, tokens = served

    def rollback(*args: str, key: str | None) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        if key is not None:
            env["CONVEYOR_API_KEY"] = key
        return subprocess.run(
            [sys.executable, "-m", "conveyor.cli", "rollback", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    viewer = rollback("m", "--url", url, key=tokens["viewer"])
    assert viewer.returncode == 1 and "deployer" in viewer.stderr, viewer.stderr
    assert "Traceback" not in viewer.stderr
    anonymous = rollback("m", "--url", url, "--json", key=None)
    assert anonymous.returncode == 1
    assert json.loads(anonymous.stdout)["error"]["code"] == "unauthenticated"
    unknown = rollback("nope", "--url", url, "--json", key=tokens["deployer"])
    assert json.loads(unknown.stdout)["error"]["code"] == "not_found"
    from conveyor.testing.ports import worker_port

    down = rollback("m", "--url", f"http://127.0.0.1:{worker_port()}", key=tokens["deployer"])
    assert down.returncode == 1 and "cannot reach" in down.stderr, down.stderr
    assert "connection refused" in down.stderr and "Traceback" not in down.stderr
    bad = rollback("m", "--url", "ftp://x", key=tokens["deployer"])
    assert bad.returncode == 1 and "--url must be" in bad.stderr


def test_the_fast_listing_prints_the_full_apps_help() -> None:
    """`conveyor --help` is rendered from parameterless copies of the commands: the same
    text as the whole app's, for every command and group, the capabilities' included."""
    from typer.testing import CliRunner

    from conveyor.cli import _listing, _only_invoked, app

    full = CliRunner().invoke(app, ["--help"], prog_name="conveyor")
    fast = CliRunner().invoke(_listing(app), ["--help"], prog_name="conveyor")
    assert full.exit_code == fast.exit_code == 0
    assert fast.output == full.output and "rollback" in fast.output and "data" in fast.output
    assert _only_invoked(app, []).registered_commands[0].callback is not (
        app.registered_commands[0].callback
    )
