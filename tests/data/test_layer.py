"""The data layer end to end: ingest, quarantine, replay, forget, on a real project."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from conveyor.data.crypto import generate_key
from conveyor.errors import ConfigError, GateFailedError
from conveyor.project import Project, init_project

SUBJECT = "forget-me-4e1d@example.org"

SPEC = """
datasets:
  tx:
    source: {kind: csv, path: data/tx.csv, watermark_column: id}
    expectations:
      - {kind: not_null, column: amount}
      - {kind: between, column: amount, min: 0, max: 10000}
      - {kind: in_set, column: cat, values: [a, b, c]}
    sensitive: [card]
    subject_keys: [email]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    init_project(tmp_path, name="t")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write(SPEC)
    monkeypatch.setenv("CONVEYOR_DATA_KEY", generate_key())
    (tmp_path / "data").mkdir()
    with Project.open(tmp_path) as proj:
        yield proj


def _rows(start: int, n: int, *, bad: bool = False) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": ids,
            # With bad=True the first row (the subject's) and every 4th break amount.between.
            "amount": [(-1.0 if bad and (i % 4 == 0 or i == start) else float(i)) for i in ids],
            "cat": ["a", "b", "c", "a"][:1] * n
            if not bad
            else [("z" if i % 5 == 0 else "a") for i in ids],
            "card": [f"4000-0000-0000-{i:04d}" for i in ids],
            "email": [SUBJECT if i == start else f"person{i}@example.org" for i in ids],
        }
    )


def _write_csv(project: Project, table: pa.Table) -> None:
    path = project.root / "data" / "tx.csv"
    if path.exists():
        old = pcsv.read_csv(path)
        table = pa.concat_tables([old.cast(table.schema), table])
    pcsv.write_csv(table, path)


def test_ingest_from_the_source_keeps_every_row_somewhere(project: Project) -> None:
    _write_csv(project, _rows(1, 40, bad=True))
    first = project.data.ingest("tx")
    assert first.rows_in == 40
    assert first.rows_accepted + first.rows_quarantined == 40
    assert first.rows_quarantined > 0 and first.version is not None
    reasons = project.data.quarantine.get(first.quarantine.id).reasons
    assert set(reasons) <= {"amount.between", "cat.in_set"} and reasons
    # Only new rows past the watermark come in next time.
    _write_csv(project, _rows(41, 10))
    second = project.data.ingest("tx")
    assert (second.rows_in, second.rows_accepted, second.rows_quarantined) == (10, 10, 0)
    assert second.version is not None and second.version.number == 2
    assert second.version.row_count == first.rows_accepted + 10  # append mode
    assert project.data.ingest("tx").rows_in == 0
    project.events.flush()
    kinds = [e.kind for e in project.events.iter(kind="data.*")]
    assert kinds.count("data.validated") == 3 and "data.quarantined" in kinds


def test_quarantined_sensitive_columns_are_encrypted_and_masked(project: Project) -> None:
    result = project.data.ingest("tx", _rows(1, 20, bad=True))
    batch = result.quarantine
    assert batch is not None and batch.encryption is not None
    raw = project.data.quarantine.rows(batch.id)
    assert all(v.startswith("enc:v1:") for v in raw.column("card").to_pylist())
    shown = project.data.quarantined_rows(batch.id)
    assert set(shown.column("card").to_pylist()) == {"***"}
    revealed = project.data.quarantined_rows(batch.id, reveal=True)
    assert revealed.column("card").to_pylist()[0].startswith("4000-")
    project.events.flush()
    assert project.events.count(kind="data.read") == 1  # the reveal was audited


def test_fail_policy_rejects_the_batch_into_quarantine(project: Project) -> None:
    result = project.data.ingest("tx", _rows(1, 20, bad=True), policy="fail")
    assert result.batch_rejected and result.version is None
    assert result.rows_quarantined == 20
    with pytest.raises(GateFailedError, match="rejected"):
        result.raise_for_rejection()


def test_replay_after_fixing_the_expectations(project: Project) -> None:
    result = project.data.ingest("tx", _rows(1, 20, bad=True))
    assert result.quarantine is not None
    loosened = [{"kind": "not_null", "column": "amount"}]
    from conveyor.data.validation import parse_expectations

    replay_rows = project.data.quarantined_rows(result.quarantine.id, reveal=True)
    again = project.data.ingest(
        "tx",
        replay_rows.drop_columns(["_quarantine_reason"]),
        expectations=parse_expectations(loosened),
    )
    assert again.rows_accepted == replay_rows.num_rows


def test_sensitive_column_without_a_key_is_a_config_error(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVEYOR_DATA_KEY")
    with (
        Project.open(project.root) as fresh,
        pytest.raises(ConfigError, match="CONVEYOR_DATA_KEY"),
    ):
        fresh.data.ingest("tx", _rows(1, 20, bad=True))


def test_forget_leaves_nothing_of_the_subject_on_disk(project: Project) -> None:
    project.data.ingest("tx", _rows(1, 30, bad=True))  # subject in row 1 (bad: quarantined)
    project.data.ingest("tx", _rows(100, 10))  # subject again, in a good row
    project.data.ingest(
        "tx",
        _rows(200, 10),
    )  # and in a third batch (append)
    project.events.emit("support.ticket", payload={"customer": {"email": SUBJECT}, "n": 1})
    project.events.emit("support.ticket", payload={"email": "someone-else@example.org"})
    project.events.flush()
    before = project.data.versions.read("tx")
    assert SUBJECT in before.column("email").to_pylist()

    result = project.data.forget("email", SUBJECT, actor="dpo")
    assert result.rows_removed >= 2 and result.events_erased == 1
    assert result.quarantine_rows_removed == 1

    for version in project.data.versions.all("tx"):
        emails = project.data.versions.read(version).column("email").to_pylist()
        assert SUBJECT not in emails and len(emails) == version.row_count
    for batch in project.data.quarantine.list().items:
        assert (
            SUBJECT
            not in project.data.quarantined_rows(batch.id, reveal=True).column("email").to_pylist()
        )
    assert project.events.count(kind="support.ticket") == 1
    (audit,) = project.events.query(kind="data.forgotten").items
    assert SUBJECT not in str(audit.to_dict())
    project.close()
    leftovers = []
    for path in (project.root / ".conveyor").rglob("*"):
        if path.is_file() and SUBJECT.encode() in path.read_bytes():
            leftovers.append(str(path.relative_to(project.root)))
    assert leftovers == []
    assert os.path.exists(project.root / ".conveyor" / "events.db")
