"""``conveyor keys ...`` on a real project (SQLite or PostgreSQL store), plus one real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli.keys import keys_app
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project

CONVEYOR = str(Path(sys.executable).with_name("conveyor"))
TOKEN = re.compile(r"^cvy_[A-Za-z0-9_-]{43}$", re.MULTILINE)


@pytest.fixture
def project(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("CONVEYOR_ARTIFACTS", "CONVEYOR_EVENTS", "CONVEYOR_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CONVEYOR_STORE", store_url)
    root = tmp_path / "p"
    init_project(root, name="keys-test")
    return root


def cli(project: Path, *args: str, key: str | None = None) -> tuple[int, str, str]:
    env = {"CONVEYOR_API_KEY": key} if key else {}
    result = CliRunner().invoke(keys_app, [*args, "-C", str(project)], env=env)
    return result.exit_code, result.stdout, result.stderr


def create(project: Path, name: str, role: str, *args: str, key: str | None = None) -> str:
    code, out, err = cli(project, "create", name, "--role", role, *args, key=key)
    assert code == 0, out + err
    found = TOKEN.findall(out)
    assert len(found) == 1, out
    assert "cannot show it again" in err
    return found[0]


def listed(project: Path, key: str) -> list[dict[str, object]]:
    code, out, err = cli(project, "list", "--json", key=key)
    assert code == 0, out + err
    body = json.loads(out)
    assert body["next_cursor"] is None
    items: list[dict[str, object]] = body["items"]
    return items


def test_bootstrap_create_prints_a_token_that_verifies(project: Path) -> None:
    admin = create(project, "admin", "admin")
    with Project.open(project) as proj:
        key = ApiKeys(proj.store, None).verify(admin)
        assert (key.name, key.role) == ("admin", "admin")
        assert key.created_by is not None and key.created_by.startswith("cli")
        events = proj.events.latest(5, kind="auth.*")
    assert [(e.kind, e.subject) for e in events] == [("auth.key_created", "admin")]
    assert admin[4:] not in json.dumps([e.to_dict() for e in events], default=str)


def test_once_a_key_exists_commands_need_one(project: Path) -> None:
    create(project, "admin", "admin")
    code, out, err = cli(project, "create", "sneaky", "--role", "admin")
    assert code == 1
    assert "CONVEYOR_API_KEY" in err and TOKEN.search(out) is None
    code, _, err = cli(project, "list")
    assert code == 1 and "CONVEYOR_API_KEY" in err


def test_admin_key_manages_keys_and_a_viewer_key_is_refused(project: Path) -> None:
    admin = create(project, "admin", "admin")
    viewer = create(
        project, "dash", "viewer", "--rate", "5", "--burst", "10", "--expires", "30d", key=admin
    )
    rows = listed(project, admin)
    assert [(r["name"], r["role"]) for r in rows] == [("admin", "admin"), ("dash", "viewer")]
    dash = rows[1]
    assert dash["rate_per_second"] == 5.0 and dash["burst"] == 10 and dash["expires_at"]
    assert all(admin[4:] not in json.dumps(r) and viewer[4:] not in json.dumps(r) for r in rows)

    for args in (("create", "x", "--role", "admin"), ("revoke", "admin"), ("list",)):
        code, out, err = cli(project, *args, key=viewer)
        assert code == 1, out
        assert "needs the role 'admin'" in err and "'viewer'" in err
    code, out, err = cli(project, "create", "x", "--role", "admin", "--json", key=viewer)
    assert code == 1 and json.loads(out)["error"]["code"] == "forbidden"
    assert [r["name"] for r in listed(project, admin)] == ["admin", "dash"]  # nothing changed

    code, out, err = cli(project, "revoke", "dash", key=admin)
    assert code == 0 and "Revoked API key 'dash'" in out
    code, _, err = cli(project, "list", key=viewer)
    assert code == 1 and "'dash' was revoked" in err

    with Project.open(project) as proj:
        events = proj.events.latest(10, kind="auth.*")
    assert [(e.kind, e.subject, e.actor) for e in events][1:] == [
        ("auth.key_created", "dash", "key:admin"),
        ("auth.key_revoked", "dash", "key:admin"),
    ]


def test_table_and_bad_options(project: Path) -> None:
    admin = create(project, "admin", "admin", "--rate", "2.5")
    code, out, _ = cli(project, "list", key=admin)
    assert code == 0
    assert "admin" in out and admin[:10] in out and "2.5/s, burst 3" in out
    assert admin[10:] not in out
    code, _, err = cli(project, "create", "x", "--role", "root", key=admin)
    assert code == 1 and "role 'root'" in err
    for bad in ("0d", "30", "soon"):
        code, _, err = cli(project, "create", "x", "--role", "viewer", "--expires", bad, key=admin)
        assert code == 1 and f"--expires {bad!r}" in err and "7d" in err, err
    code, _, err = cli(project, "revoke", "ghost", key=admin)
    assert code == 1 and "no API key named 'ghost'" in err
    code, _, err = cli(project, "list", key="cvy_" + "z" * 43)
    assert code == 1 and "unknown API key" in err and "z" * 43 not in err


def test_real_process(tmp_path: Path) -> None:
    root = tmp_path / "real"
    init_project(root, name="real")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}

    def run(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        extra = {"CONVEYOR_API_KEY": key} if key else {}
        return subprocess.run(
            [CONVEYOR, "keys", *args],
            cwd=root,
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=120,
        )

    made = run("create", "root", "--role", "admin")
    assert made.returncode == 0, made.stderr
    token = TOKEN.findall(made.stdout)[0]
    shown = run("list", "--json", key=token)
    assert shown.returncode == 0, shown.stderr
    assert [k["name"] for k in json.loads(shown.stdout)["items"]] == ["root"]
