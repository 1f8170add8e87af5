"""`conveyor` starts with the garbage collector off (conveyor._start) and turns it on
before the command runs; `serve` turns it on once the server's start-up is over."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

_RUN = """
import gc, json, sys
sys.argv = ["conveyor", *json.loads(sys.argv[1])]
def collections():
    return sum(s["collections"] for s in gc.get_stats())
# the plain module counts its import (which runs with the collector on); the entry point
# counts from the call that turns the collector off
before = collections()
from {module} import main
if {module!r} == "conveyor._start":
    before = collections()
try:
    main()
except SystemExit:
    pass
print("\\nGC " + json.dumps({{
    "enabled": gc.isenabled(),
    "collections": collections() - before,
}}))
"""


_ENTRIES = {"start": "conveyor._start", "cli": "conveyor.cli"}


def _collector(args: list[str], entry: str, cwd: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _RUN.format(module=_ENTRIES[entry]), json.dumps(args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    ).stdout
    found: dict[str, object] = json.loads(out.rpartition("\nGC ")[2])
    return found


def test_the_entry_point_collects_nothing_until_the_command_runs(tmp_path: Path) -> None:
    # `serve --help` stops before any server: the collector is still off, and the whole
    # start-up (the CLI, typer, every capability's declaration) ran without a collection
    served = _collector(["serve", "--help"], "start", tmp_path)
    assert served == {"enabled": False, "collections": 0}
    # any other command runs with the collector on
    assert _collector(["--help"], "start", tmp_path)["enabled"] is True
    # the plain module (python -m conveyor.cli) never turns it off: start-up collects
    plain = _collector(["serve", "--help"], "cli", tmp_path)
    assert plain["enabled"] is True and int(str(plain["collections"])) > 0


def test_the_server_turns_the_collector_on_after_its_start_up(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "serving"))
    from serving_support import linear_project

    from conveyor.serving.app import create_app
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy
    from conveyor.serving.server import ThreadedServer

    project = linear_project(tmp_path, name="gc", scales=(1.0,))
    RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
    gc.disable()
    try:
        with ThreadedServer(create_app(project)) as server:
            deadline = time.monotonic() + 30
            while httpx.get(f"{server.url}/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline, "never ready"
                time.sleep(0.05)
            assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
        project.close()
