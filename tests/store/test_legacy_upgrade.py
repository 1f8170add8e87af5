"""A project made by Conveyor before capabilities owned their tables opens and upgrades.

The project is made by the real code of that release (the commit below, taken
from this repository's history with ``git archive``) in a subprocess: a data
set version, a registered model with an alias, an API key, a route, a
schedule. Opening it with today's code adopts every table into its owner's
migration chain without copying or losing a row, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor.project import Project
from conveyor.store.migrate import LEGACY_VERSION_TABLE, head_revision, store_chains

#: The last commit whose metadata store kept every table in one chain (revision 0004).
LEGACY_COMMIT = "9fba084b5598bce39a83dec26c9b7d36f4e5d6ae"
REPO = Path(__file__).resolve().parents[2]

_MAKE = """
import json, sys
import numpy as np, pyarrow as pa
from sklearn.linear_model import LogisticRegression
import conveyor
from conveyor.project import Project, init_project
from conveyor.serving.auth import ApiKeys
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy

assert conveyor.__file__.startswith(sys.argv[2]), conveyor.__file__  # the old code, not ours
init_project(sys.argv[1], name="legacy")
with Project.open(sys.argv[1]) as project:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(int)
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
    version = project.data.ingest("loans", table).version
    model = LogisticRegression().fit(x, y)
    registered = project.registry.register(
        "risk", model, signature_from=table.drop(["y"]), metrics={"auc": 0.9}
    )
    project.registry.set_alias("risk", "challenger", registered.number, actor="legacy")
    token, key = ApiKeys(project.store, project.events).create("ops", "admin", actor="legacy")
    RouteStore(project.store, project.events, project.registry).set(
        "risk", RoutePolicy.fixed(registered.number), actor="legacy", reason="first"
    )
    print(json.dumps({"token": token, "dataset_version": version.id,
                      "model_version": registered.id}))
"""


@pytest.fixture(scope="module")
def legacy_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The legacy release's ``src`` folder, from git."""
    found = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{LEGACY_COMMIT}^{{commit}}"],
        capture_output=True,
    )
    if found.returncode != 0:
        raise RuntimeError(
            f"this test needs commit {LEGACY_COMMIT[:12]} of Conveyor's history to build a "
            "project with the old code; clone the repository with its history (no --depth)"
        )
    folder = tmp_path_factory.mktemp("legacy")
    archive = folder / "src.tar"
    subprocess.run(
        ["git", "-C", str(REPO), "archive", "-o", str(archive), LEGACY_COMMIT, "src"], check=True
    )
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def _make_legacy_project(root: Path, src: Path, env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", _MAKE, str(root), str(src)],
        env={**os.environ, **env, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    made: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return made


@pytest.mark.slow
def test_a_project_made_before_capabilities_owned_their_tables_upgrades(
    store_url: str, legacy_src: Path, tmp_path: Path
) -> None:
    env = {"CONVEYOR_STORE": store_url}
    root = tmp_path / "legacy"
    made = _make_legacy_project(root, legacy_src, env)

    with Project.open(root, env=env) as project:
        store = project.store  # opening adopts and migrates
        with store.read() as session:
            tables = set(sa.inspect(session.connection()).get_table_names())
        assert LEGACY_VERSION_TABLE not in tables
        assert store.health()["migrated"] is True
        # Adopted at each chain's baseline, then migrated to its head (data: 0002).
        assert store.revisions() == {
            c.name: head_revision(c.script_location) for c in store_chains()
        }
        assert store.schema_diff() == []
        # Every row is where it was, read through today's capabilities.
        assert project.data.versions.get("loans", 1).id == made["dataset_version"]
        version = project.registry.get("risk", "challenger")
        assert version.id == made["model_version"] and version.metrics == {"auc": 0.9}
        assert project.registry.load(version).model.predict([[1.0, 0.0, 0.0]]).tolist() == [1]
        key = project.keys.verify(made["token"])
        assert (key.name, key.role, key.created_by) == ("ops", "admin", "legacy")
        from conveyor.serving.route_store import RouteStore

        route = RouteStore(store, project.events, project.registry).get("risk")
        assert route.revision == 1 and route.policy.serving_versions() == (version.number,)
        # And the upgraded store keeps working: a new version on top of the old ones.
        assert project.registry.register("risk", project.registry.load(version).model).number == 2

    with Project.open(root, env=env) as again:  # a second open has nothing left to do
        assert again.store.health()["behind"] == []
