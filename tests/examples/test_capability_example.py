"""The worked example of docs/architecture.md: a capability in its own package
(examples/capability) plugs in a spec section, a table with its own migration chain, a
service, a CLI verb, HTTP routes, an event kind and actions, with no edit to Conveyor.

It is made visible exactly as an installed package would be: a ``.dist-info`` folder with
its entry point on the path (what ``pip install`` writes), in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "capability"


@pytest.fixture
def installed(tmp_path: Path) -> dict[str, str]:
    """The environment of a process in which the example package is installed."""
    site = tmp_path / "site"
    dist = site / "conveyor_notes-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: conveyor-notes\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[conveyor.capabilities]\nnotes = conveyor_notes.capability:CAPABILITY\n"
    )
    path = os.pathsep.join([str(site), str(EXAMPLE), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)}


def _conveyor(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_capability_in_its_own_package_plugs_in_everywhere(
    installed: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "proj"
    assert _conveyor(installed, "init", str(root), cwd=tmp_path).returncode == 0
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write("notes: {max_length: 40}\nserving: {auth: disabled}\n")
    # The CLI verb: mounted from the declaration; the table is created by its own chain.
    added = _conveyor(installed, "notes", "add", "fraud@3", "retrained after drift", cwd=root)
    assert added.returncode == 0, added.stderr
    assert "about fraud@3 by cli:" in added.stdout
    # The spec section, and its environment override.
    too_long = _conveyor(
        {**installed, "CONVEYOR_NOTES__MAX_LENGTH": "5"}, "notes", "add", "x", "longer", cwd=root
    )
    assert too_long.returncode == 1 and "notes.max_length is 5" in too_long.stderr
    # The references list what the capability brings: its setting and its event kind.
    spec = json.loads(_conveyor(installed, "spec", "--json", cwd=root).stdout)["items"]
    assert {"path": "notes.max_length", "variable": "CONVEYOR_NOTES__MAX_LENGTH"}.items() <= next(
        s for s in spec if s["path"] == "notes.max_length"
    ).items()
    kinds = json.loads(_conveyor(installed, "events", "kinds", "--json", cwd=root).stdout)
    assert {k["name"]: k["capability"] for k in kinds["items"]}["note.added"] == "notes"
    listed = _conveyor(installed, "notes", "list", "--json", cwd=root)
    body = json.loads(listed.stdout)
    assert [n["text"] for n in body["items"]] == ["retrained after drift"]
    # The event kind: an audit event in the one log, with its checked payload.
    tail = _conveyor(installed, "events", "tail", "--kind", "note.added", "--json", cwd=root)
    (event,) = json.loads(tail.stdout)["items"]
    assert event["subject"] == "fraud@3" and event["payload"]["length"] == 21
    # The migration chain is the store's: doctor sees it at its head.
    doctor = _conveyor(installed, "doctor", "--json", cwd=root)
    store = next(s for s in json.loads(doctor.stdout)["seams"] if s["seam"] == "store")
    assert store["facts"]["revisions"]["notes"] == store["facts"]["heads"]["notes"] == "0001"

    # The HTTP routes and actions: served by the same app, described by its OpenAPI.
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(root)],
        env=installed,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://"), url
        created = httpx.post(f"{url}/v1/notes", json={"subject": "loans", "text": "hi"}, timeout=10)
        assert created.status_code == 201, created.text
        assert created.json()["author"] == "anonymous"
        found = httpx.get(f"{url}/v1/notes", params={"subject": "loans"}, timeout=10).json()
        assert [n["text"] for n in found["items"]] == ["hi"]
        paths = httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]
        assert paths["/v1/notes"]["post"]["description"].endswith("`notes.write`.")
        big = httpx.post(f"{url}/v1/notes", json={"subject": "s", "text": "x" * 41}, timeout=10)
        assert big.status_code == 422 and big.json()["field"] == "text"
    finally:
        server.terminate()
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()


_SERVE = """
import signal, sys
from conveyor.project import Project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
project = Project.open(sys.argv[1])
server = ThreadedServer(create_app(project))
server.start()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print(server.url, flush=True)
signal.sigwait({signal.SIGTERM})  # until the test is done with it
server.stop()
project.close()
"""
