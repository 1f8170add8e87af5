"""The CLI starts fast because it imports only what the command needs: the modules each
entry point loads are checked (not the time, which a shared machine makes noise of)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
NOT_FOR_HELP = ("sqlalchemy", "pydantic", "yaml", "asyncio", "conveyor.project", "conveyor.store")

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


def _modules(args: list[str], cwd: Path) -> tuple[int, set[str], str]:
    out = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
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
