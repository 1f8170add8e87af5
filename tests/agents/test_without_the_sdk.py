"""A server installed without the mcp extra starts, serving no /mcp; one whose spec lists
tool servers says which extra to install."""

from __future__ import annotations

import textwrap
from pathlib import Path

from conveyor.project import init_project
from fresh_app_support import run_fresh_app
from fresh_python import run_python

SCRIPT = textwrap.dedent(
    """
    import sys

    class NoMcp:  # as if the mcp extra were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "mcp" or name.startswith("mcp."):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, NoMcp())
    import importlib.util
    importlib.util.find_spec = (lambda real: lambda name, *a: None if name.split(".")[0]
                                == "mcp" else real(name, *a))(importlib.util.find_spec)
    from starlette.testclient import TestClient
    from conveyor.errors import MissingDependencyError
    from conveyor.project import Project
    from conveyor.serving.app import create_app

    with Project.open(sys.argv[1]) as project:
        try:
            app = create_app(project)
        except MissingDependencyError as exc:
            print("refused:", exc.message)
            raise SystemExit(0)
        with TestClient(app) as client:
            print("live", client.get("/v2/health/live").status_code)
            print("mcp", client.post("/mcp", json={}).status_code)
    """
)


def _run(root: Path) -> str:
    return run_python(SCRIPT, str(root))


def test_without_the_sdk_the_server_starts_without_mcp(tmp_path: Path) -> None:
    init_project(tmp_path, name="nomcp")
    out = _run(tmp_path)
    assert "live 200" in out and "mcp 404" in out


def test_without_the_sdk_a_spec_with_tool_servers_names_the_extra(tmp_path: Path) -> None:
    init_project(tmp_path, name="nomcp")
    with (tmp_path / "conveyor.yaml").open("a") as spec:
        spec.write("\nmcp:\n  servers:\n    files: {command: [python, -m, files]}\n")
    out = _run(tmp_path)
    assert "refused: mcp.servers lists files" in out
    assert "pip install 'conveyor[mcp]'" in out


LAZY = """
print("live", client.get("/v2/health/live").status_code)
print("sdk after start-up", "mcp" in sys.modules)
tools = client.get("/v1/mcp/tools", headers=auth)
names = [t["name"] for t in tools.json()["tools"]]
print("tools", tools.status_code, "conveyor__list_models" in names)
print("sdk after a call", "mcp" in sys.modules)
"""


def test_a_server_without_tool_servers_imports_the_sdk_at_its_first_mcp_call(
    tmp_path: Path,
) -> None:
    # a third of a second of start-up a model server nobody calls over MCP does not pay
    init_project(tmp_path, name="lazymcp")
    out = run_fresh_app(tmp_path, LAZY)
    assert "live 200" in out
    assert "sdk after start-up False" in out
    assert "tools 200 True" in out and "sdk after a call True" in out


CONCURRENT = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    import httpx
    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    with Project.open(sys.argv[1]) as project:
        token = ApiKeys(project.store, project.events).create("agent", "predictor")[0]
        with ThreadedServer(create_app(project)) as server:
            def tools(_):
                answer = httpx.get(f"{server.url}/v1/mcp/tools", timeout=30,
                                   headers={"authorization": f"Bearer {token}"})
                return answer.status_code, sorted(t["name"] for t in answer.json()["tools"])

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(tools, range(8)))
            print("statuses", sorted({status for status, _ in answers}))
            print("one catalogue", len({tuple(names) for _, names in answers}) == 1)
        print("stopped cleanly")
    """
)


def test_callers_arriving_together_share_one_start_of_the_gateway(tmp_path: Path) -> None:
    init_project(tmp_path, name="lazymcp")
    out = run_python(CONCURRENT, str(tmp_path))
    assert "statuses [200]" in out and "one catalogue True" in out
    assert "stopped cleanly" in out  # the manager's task stopped at shut-down
