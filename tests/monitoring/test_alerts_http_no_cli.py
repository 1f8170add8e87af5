"""The alerts' HTTP routes never import a CLI module: a server process whose first use of
them came before any ``conveyor.cli`` import answered 500 (``conveyor.monitoring.alerts.cli
has no attribute 'alerts_app'``: importing that module mounts every capability's CLI,
itself included, half-built)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from fresh_python import run_python

CODE = textwrap.dedent(
    """
    import sys
    import httpx
    from conveyor.project import Project, init_project
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    root = sys.argv[1]
    init_project(root, name="alerts")
    with open(f"{root}/conveyor.yaml", "a") as spec:
        spec.write("serving: {auth: disabled}\\n")
    with Project.open(root, env={}) as project, ThreadedServer(create_app(project)) as server:
        listed = httpx.get(f"{server.url}/v1/alerts", timeout=30)
        missing = httpx.get(f"{server.url}/v1/alerts/nope", timeout=30)
    print(listed.status_code, missing.status_code, "conveyor.cli" in sys.modules)
    """
)


def test_the_alert_routes_answer_in_a_process_that_never_imported_the_cli(
    tmp_path: Path,
) -> None:
    out = run_python(CODE, str(tmp_path / "p"))
    assert out.split() == ["200", "404", "False"], out
