"""`conveyor data ...` as a user runs it: the installed script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from conveyor.data.crypto import generate_key

CONVEYOR = str(Path(sys.executable).with_name("conveyor"))

SPEC = """
datasets:
  tx:
    expectations:
      - {kind: not_null, column: amount}
      - {kind: between, column: amount, min: 0, max: 1000}
    sensitive: [email]
    subject_keys: [customer]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    env = _env(tmp_path)
    subprocess.run(
        [CONVEYOR, "init", str(tmp_path / "p")], env=env, check=True, capture_output=True
    )
    with (tmp_path / "p" / "conveyor.yaml").open("a") as f:
        f.write(SPEC)
    return tmp_path / "p"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    key_file = tmp_path / "key"
    if not key_file.exists():
        key_file.write_text(generate_key())
    env["CONVEYOR_DATA_KEY"] = key_file.read_text()
    return env


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVEYOR, *args, "-C", str(project)],
        env=_env(project.parent),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _batch(path: Path, start: int, n: int, bad: int = 0) -> Path:
    ids = list(range(start, start + n))
    table = pa.table(
        {
            "id": ids,
            "amount": [(-5.5 if i < start + bad else i % 500 + 0.25) for i in ids],
            "email": [f"u{i}@x.test" for i in ids],
            "customer": [i % 7 for i in ids],
        }
    )
    (pq.write_table if path.suffix == ".parquet" else pcsv.write_csv)(table, path)
    return path


def test_ingest_quarantine_versions_profile_drift_forget(project: Path) -> None:
    first = run(
        project,
        "data",
        "ingest",
        "tx",
        "--file",
        str(_batch(project / "a.csv", 0, 200, bad=3)),
        "--json",
    )
    assert first.returncode == 0, first.stderr
    body = json.loads(first.stdout)
    assert (body["rows_in"], body["rows_accepted"], body["rows_quarantined"]) == (200, 197, 3)
    second = run(
        project, "data", "ingest", "tx", "--file", str(_batch(project / "b.parquet", 200, 100))
    )
    assert second.returncode == 0 and "stored as tx@2" in second.stdout

    versions = json.loads(run(project, "data", "versions", "--json").stdout)["items"]
    assert [v["ref"] for v in versions] == ["tx@2", "tx@1"]
    assert versions[0]["encrypted_columns"] == ["email"] and versions[0]["row_count"] == 297

    batches = json.loads(run(project, "data", "quarantine", "list", "--json").stdout)["items"]
    assert len(batches) == 1 and batches[0]["reasons"] == {"amount.between": 3}
    shown = json.loads(
        run(project, "data", "quarantine", "show", batches[0]["id"], "--json").stdout
    )["items"]
    assert {r["email"] for r in shown} == {"***"} and shown[0][
        "_quarantine_reason"
    ] == "amount.between"

    profile = json.loads(run(project, "data", "profile", "tx@2", "--json").stdout)
    assert set(profile["columns"]["email"]) <= {
        "type",
        "count",
        "nulls",
        "null_fraction",
        "distinct",
    }
    assert "max" in profile["columns"]["amount"]

    drift = run(project, "data", "drift", "tx@1", "tx@2", "--json")
    drifted = json.loads(drift.stdout)
    assert drifted["kind"] == "drift"
    tail = run(project, "events", "tail", "--kind", "drift.detected", "--json").stdout
    events = json.loads(tail)["items"]
    # An alarm event only when the report failed: what retraining can trigger on.
    assert not drifted["passed"] and len(events) == 1, drifted["passed"]
    assert drift.returncode == 3  # a check failed
    assert events[0]["payload"]["report_id"] == drifted["id"]

    forgot = json.loads(
        run(project, "data", "forget", "--key", "customer=3", "--yes", "--json").stdout
    )
    assert forgot["rows_removed"] > 0 and forgot["versions_rewritten"] == 2


def test_validate_only_and_bad_input(project: Path) -> None:
    bad = run(
        project, "data", "validate", "tx", "--file", str(_batch(project / "a.csv", 0, 50, bad=5))
    )
    assert bad.returncode == 3 and "amount.between" in bad.stdout  # a check failed
    empty = {"items": [], "next_cursor": None}
    assert json.loads(run(project, "data", "versions", "--json").stdout) == empty  # none stored
    corrupt = project / "broken.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    failed = run(project, "data", "ingest", "tx", "--file", str(corrupt))
    assert failed.returncode == 1 and "broken.parquet" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert json.loads(run(project, "data", "versions", "--json").stdout) == empty
    missing = run(project, "data", "ingest", "nope")
    assert missing.returncode == 1 and "no source" in missing.stderr
    policy = run(project, "data", "ingest", "tx", "--policy", "drop")
    assert policy.returncode == 1 and "--policy 'drop'" in policy.stderr
    assert "fail, quarantine, warn" in policy.stderr
    rejected = run(
        project,
        "data", "ingest", "tx", "--policy", "fail", "--json",
        "--file", str(_batch(project / "c.csv", 0, 20, bad=2)),
    )  # fmt: skip
    assert rejected.returncode == 3  # the batch failed its checks and was rejected
    assert json.loads(rejected.stdout)["batch_rejected"] is True


def test_irreversible_data_commands_need_the_admin_role(project: Path) -> None:
    assert (
        run(project, "data", "ingest", "tx", "-f", str(_batch(project / "a.csv", 0, 20))).returncode
        == 0
    )
    assert run(project, "keys", "create", "root", "--role", "admin", "--json").returncode == 0
    from conveyor.governance.keys import ApiKeys
    from conveyor.project import Project

    with Project.open(project, env={}) as proj:
        keys = ApiKeys(proj.store, proj.events)
        tokens = {role: keys.create(role, role)[0] for role in ("viewer", "deployer")}
        tokens["admin"] = keys.create("admin2", "admin")[0]
    env = {**_env(project.parent)}

    def as_role(role: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        with_key = {**env, "CONVEYOR_API_KEY": tokens[role]} if role else env
        return subprocess.run(
            [CONVEYOR, *args, "-C", str(project)], env=with_key, capture_output=True, text=True
        )

    forget = ("data", "forget", "--key", "customer=3", "--yes")
    for role in (None, "viewer", "deployer"):
        refused = as_role(role, *forget)
        assert refused.returncode == 1, (role, refused.stdout, refused.stderr)
        assert "data.forget" in refused.stderr and "'admin'" in refused.stderr
    assert as_role("deployer", "data", "rotate-key").returncode == 1
    # Nothing was removed by the refused calls; the admin's call removes the subject.
    done = as_role("admin", *forget, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows_removed"] > 0
