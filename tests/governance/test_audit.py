"""The audit trail: every audit event, filtered by who did it, over the CLI and HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conveyor.events.catalogue import kinds
from conveyor.governance.audit import audit_kinds, audit_trail
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer


def test_audit_kinds_are_the_catalogues_audit_kinds() -> None:
    found = audit_kinds()
    assert found == sorted(k for k, v in kinds().items() if v.durability == "audit")
    assert "auth.key_created" in found and "prediction" not in found


def test_the_trail_over_python_cli_and_http(tmp_path: Path) -> None:
    init_project(tmp_path, name="audited")
    with Project.open(tmp_path, env={}) as project:
        keys = ApiKeys(project.store, project.events)
        root, _ = keys.create("root", "admin", actor="cli:ana")
        viewer, _ = keys.create("viewer", "viewer", actor="key:root")
        deployer, _ = keys.create("deployer", "deployer", actor="key:root")
        keys.revoke("viewer", actor="key:root")
        page = audit_trail(project.events, by="key:root")
        assert [(e.kind, e.subject) for e in page.items] == [
            ("auth.key_revoked", "viewer"),
            ("auth.key_created", "deployer"),
            ("auth.key_created", "viewer"),
        ]  # newest first, only what key:root did
        two = audit_trail(project.events, by="key:root", limit=2)
        rest = audit_trail(project.events, by="key:root", limit=2, cursor=two.next_cursor)
        assert [e.id for e in two.items + rest.items] == [e.id for e in page.items]
        with pytest.raises(Exception, match="not an audit kind"):
            audit_trail(project.events, kind="prediction")

        server = ThreadedServer(create_app(project))
        server.start()
        try:
            url = f"{server.url}/v1/audit"
            refused = httpx.get(url, headers={"x-api-key": viewer}, timeout=10)
            assert refused.status_code == 401  # revoked
            ok = httpx.get(
                url, params={"actor": "cli:ana"}, headers={"x-api-key": deployer}, timeout=10
            )
            assert ok.status_code == 200, ok.text
            assert [e["subject"] for e in ok.json()["items"]] == ["root"]
            bad = httpx.get(
                url, params={"since": "yesterday"}, headers={"x-api-key": root}, timeout=10
            )
            assert bad.status_code == 422 and bad.json()["field"] == "since"
        finally:
            server.stop()

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor.cli",
            "audit",
            "--actor",
            "key:root",
            "--json",
            "-C",
            str(tmp_path),
        ],
        env={**env, "CONVEYOR_API_KEY": deployer},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    body = json.loads(cli.stdout)
    assert [e["kind"] for e in body["items"]] == [
        "auth.key_revoked",
        "auth.key_created",
        "auth.key_created",
    ]
    assert body["next_cursor"] is None
