"""`conveyor data ...` as a user runs it: the command main() runs, in process (cli_support),
and the installed script in its own process once (the first ingest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from cli_support import conveyor
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
    assert _run_env(tmp_path, "init", str(tmp_path / "p")).returncode == 0
    with (tmp_path / "p" / "conveyor.yaml").open("a") as f:
        f.write(SPEC)
    return tmp_path / "p"


def _env(tmp_path: Path) -> dict[str, str]:
    """The data key (the one CONVEYOR_* variable the commands get)."""
    key_file = tmp_path / "key"
    if not key_file.exists():
        key_file.write_text(generate_key())
    return {"CONVEYOR_DATA_KEY": key_file.read_text()}


def _run_env(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return conveyor(*args, env=_env(tmp_path))


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return conveyor(*args, "-C", str(project), env=_env(project.parent))


def run_installed(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``conveyor`` script in its own process, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [CONVEYOR, *args, "-C", str(project)],
        env={**env, **_env(project.parent)},
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
    first = run_installed(
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
    empty: dict[str, Any] = {"items": [], "next_cursor": None}
    assert json.loads(run(project, "data", "versions", "--json").stdout) == empty  # none stored
    corrupt = project / "broken.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    failed = run(project, "data", "ingest", "tx", "--file", str(corrupt))
    assert failed.returncode == 1 and "broken.parquet" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert json.loads(run(project, "data", "versions", "--json").stdout) == empty
    undeclared = run(project, "data", "ingest", "nope")
    assert undeclared.returncode == 1 and "'nope' is not declared" in undeclared.stderr
    missing = run(project, "data", "ingest", "nope", "--new")
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
    env = _env(project.parent)

    def as_role(role: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        with_key = {**env, "CONVEYOR_API_KEY": tokens[role]} if role else env
        return conveyor(*args, "-C", str(project), env=with_key)

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


# -- issue 11: correct by default for a new user -------------------------------------------

HOUSES = """
datasets:
  houses:
    key: house_id
    expectations:
      - {kind: not_null, column: price}
      - {kind: between, column: price, min: 0}
"""


@pytest.fixture
def houses(tmp_path: Path) -> Path:
    """A fresh project declaring `houses` (key house_id), as a new user writes it."""
    assert _run_env(tmp_path, "init", str(tmp_path / "h")).returncode == 0
    with (tmp_path / "h" / "conveyor.yaml").open("a") as f:
        f.write(HOUSES)
    return tmp_path / "h"


def _houses(path: Path, start: int, n: int, *, price: float = 100.5, step: float = 1.0) -> Path:
    ids = list(range(start, start + n))
    table = pa.table(
        {
            "house_id": ids,
            "price": [price + (i % 50) * step for i in ids],
            "rooms": [1 + i % 5 for i in ids],
        }
    )
    pcsv.write_csv(table, path)
    return path


def _ingest(project: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    done = run(project, "data", "ingest", *args, "--json")
    body = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, body, done.stderr


def test_ingesting_the_same_file_twice_is_refused_and_keys_hold_for_the_whole_version(
    houses: Path,
) -> None:
    first = _houses(houses / "a.csv", 0, 150)
    shown = run(houses, "data", "ingest", "houses", "-f", str(first))
    assert shown.returncode == 0, shown.stderr
    # The batch's count and the version's total, both printed.
    assert "150 stored as houses@1 (append; houses@1 holds 150 rows)" in shown.stdout

    again = run(houses, "data", "ingest", "houses", "-f", str(first), "--json")
    assert again.returncode == 1
    error = json.loads(again.stdout)["error"]
    assert error["code"] == "batch_already_ingested" and error["version"] == "houses@1"
    assert "houses@1" in error["message"] and "--force" in error["message"]
    versions = json.loads(run(houses, "data", "versions", "houses", "--json").stdout)["items"]
    assert [v["ref"] for v in versions] == ["houses@1"]  # nothing stored

    # --force ingests it, but the key is judged against the whole version: every row
    # repeats a stored house_id, so all are quarantined with that reason, none stored.
    code, body, _ = _ingest(houses, "houses", "-f", str(first), "--force")
    assert code == 0
    assert (body["rows_in"], body["rows_accepted"], body["rows_quarantined"]) == (150, 0, 150)
    assert body["version"] is None
    batches = json.loads(run(houses, "data", "quarantine", "list", "--json").stdout)["items"]
    assert batches[0]["reasons"] == {"house_id.unique": 150}

    # An overlapping batch: the 50 repeated keys are set aside, the 100 new ones appended.
    code, body, _ = _ingest(houses, "houses", "-f", str(_houses(houses / "b.csv", 100, 150)))
    assert code == 0
    assert (body["rows_accepted"], body["rows_quarantined"], body["rows_total"]) == (100, 50, 250)
    assert body["mode"] == "append" and body["version"]["batch_rows"] == 100
    from conveyor.project import Project

    with Project.open(houses, env=_env(houses.parent)) as proj:
        ids = proj.data.versions.read("houses@2").column("house_id").to_pylist()
    assert sorted(ids) == list(range(250))  # every house once


def test_modes_replace_and_upsert_chosen_per_run(houses: Path) -> None:
    assert _ingest(houses, "houses", "-f", str(_houses(houses / "a.csv", 0, 100)))[0] == 0
    # upsert by the key: 40 rows replaced (new prices), 60 added.
    code, body, _ = _ingest(
        houses, "houses", "-f", str(_houses(houses / "b.csv", 60, 100, price=500.5)),
        "--mode", "upsert",
    )  # fmt: skip
    assert code == 0, body
    assert (body["mode"], body["rows_replaced"], body["rows_total"]) == ("upsert", 40, 160)
    line = run(
        houses, "data", "ingest", "houses", "--mode", "replace",
        "-f", str(_houses(houses / "c.csv", 1000, 30)),
    ).stdout  # fmt: skip
    assert "30 stored as houses@3 (replace; houses@3 holds 30 rows)" in line
    from conveyor.project import Project

    with Project.open(houses, env=_env(houses.parent)) as proj:
        upserted = proj.data.versions.read("houses@2").to_pydict()
        prices = dict(zip(upserted["house_id"], upserted["price"], strict=True))
        assert len(prices) == 160 and prices[59] < 500 <= prices[60] and prices[159] >= 500
    bad = run(houses, "data", "ingest", "houses", "--mode", "merge")
    assert bad.returncode == 1 and "append, replace, upsert" in bad.stderr


def test_upsert_without_a_key_is_a_spec_error(tmp_path: Path) -> None:
    assert _run_env(tmp_path, "init", str(tmp_path / "p")).returncode == 0
    with (tmp_path / "p" / "conveyor.yaml").open("a") as f:
        f.write("datasets:\n  houses:\n    mode: upsert\n")
    done = run(
        tmp_path / "p", "data", "ingest", "houses", "-f", str(_houses(tmp_path / "a.csv", 0, 5))
    )
    assert done.returncode == 1 and "upsert needs a key" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_typo_in_the_data_set_name_suggests_the_declared_one(houses: Path) -> None:
    batch = str(_houses(houses / "a.csv", 0, 20))
    typo = run(houses, "data", "ingest", "house", "-f", batch, "--json")
    assert typo.returncode == 1
    error = json.loads(typo.stdout)["error"]
    assert error["code"] == "dataset_undeclared"
    assert "did you mean 'houses'?" in error["message"] and "--new" in error["message"]
    assert json.loads(run(houses, "data", "versions", "--json").stdout)["items"] == []
    validated = run(houses, "data", "validate", "house", "-f", batch)
    assert validated.returncode == 1 and "did you mean 'houses'?" in validated.stderr

    # --new makes an ad-hoc data set and shows the schema it inferred.
    made = run(houses, "data", "ingest", "scratch", "-f", batch, "--new")
    assert made.returncode == 0, made.stderr
    assert "new data set 'scratch'" in made.stdout and "inferred schema" in made.stdout
    assert "house_id  int64" in made.stdout and "price     double" in made.stdout
    assert "{kind: schema, columns: {house_id: int64, price: double, rooms: int64}}" in made.stdout
    # Once it exists, it is known: the next batch needs no --new.
    code, body, _ = _ingest(houses, "scratch", "-f", str(_houses(houses / "b.csv", 20, 5)))
    assert code == 0 and body["new_dataset"] is None and body["rows_total"] == 25


def test_an_expectation_on_a_column_the_data_lacks_is_a_config_error(houses: Path) -> None:
    with (houses / "conveyor.yaml").open("a") as f:
        f.write("      - {kind: not_null, column: prize}\n")
    done = run(houses, "data", "ingest", "houses", "-f", str(_houses(houses / "a.csv", 0, 50)))
    assert done.returncode == 1
    message = done.stderr.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert "'prize' is not in the data; did you mean 'price'?" in message
    assert "columns: house_id, price, rooms" in message
    as_json = json.loads(
        run(houses, "data", "ingest", "houses", "-f", str(houses / "a.csv"), "--json").stdout
    )["error"]
    assert as_json["code"] == "expectation_column_unknown" and as_json["suggestion"] == "price"
    # Nothing stored, nothing quarantined.
    assert json.loads(run(houses, "data", "versions", "--json").stdout)["items"] == []
    assert json.loads(run(houses, "data", "quarantine", "list", "--json").stdout)["items"] == []


def test_drift_between_appended_versions_compares_the_new_batch(houses: Path) -> None:
    import random

    rng = random.Random(7)

    def batch(name: str, start: int, n: int, shift: float) -> str:
        ids = list(range(start, start + n))
        table = pa.table(
            {
                "house_id": ids,
                "price": [rng.gauss(300_000, 30_000) * shift for _ in ids],
                "rooms": [rng.randint(1, 5) for _ in ids],
            }
        )
        pcsv.write_csv(table, houses / name)
        return str(houses / name)

    assert _ingest(houses, "houses", "-f", batch("1.csv", 0, 1500, 1.0))[0] == 0
    start = 1500
    for number, n in ((2, 1500), (3, 1500)):
        assert _ingest(houses, "houses", "-f", batch(f"{number}.csv", start, n, 1.0))[0] == 0
        start += n
    code, body, _ = _ingest(houses, "houses", "-f", batch("4.csv", start, 800, 1.15))
    assert code == 0 and body["rows_total"] == 5300

    # The default: houses@4's own batch (800 rows) against houses@1.
    drift = run(houses, "data", "drift", "houses@1", "houses@4", "--json")
    report = json.loads(drift.stdout)
    assert drift.returncode == 3, drift.stdout
    drifted = {c["name"] for c in report["checks"] if not c["passed"]}
    assert any("price" in name for name in drifted), drifted
    assert report["compared"] == {
        "reference": {"ref": "houses@1", "rows": 1500, "scope": "version"},
        "current": {"ref": "houses@4", "rows": 800, "scope": "batch"},
    }
    printed = run(houses, "data", "drift", "houses@1", "houses@4").stdout
    assert "compared 1,500 rows (houses@1) with 800 rows (batch of houses@4)" in printed
    # Whole versions on request: 1,500 rows against 5,300, as before.
    whole = json.loads(
        run(
            houses, "data", "drift", "houses@1", "houses@4", "--compare", "version", "--json"
        ).stdout
    )
    assert whole["compared"]["current"] == {"ref": "houses@4", "rows": 5300, "scope": "version"}
    # The same shift, diluted by 4,500 older rows: a statistic a fraction of the batch's.
    price = "drift.column.price"
    diluted = next(c["observed"]["effect_size"] for c in whole["checks"] if c["name"] == price)
    batch = next(c["observed"] for c in report["checks"] if c["name"] == price)
    assert batch["judgment"] == "drift" and batch["effect_size"] > 4 * diluted
    assert all("house_id" not in c["name"] for c in report["checks"])  # a key is not compared
