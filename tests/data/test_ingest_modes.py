"""Ingest modes, keys held across the whole version, repeated batches and undeclared
names, through the Python API (``project.data``) on a real project."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conveyor.data.crypto import generate_key
from conveyor.data.errors import (
    BatchAlreadyIngestedError,
    ExpectationColumnError,
    UndeclaredDatasetError,
)
from conveyor.data.validation import validate
from conveyor.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError
from conveyor.project import Project, init_project

SPEC = """
datasets:
  stock:
    key: [shop, sku]
    mode: upsert
    sensitive: [supplier]
    expectations:
      - {kind: not_null, column: qty}
      - {kind: unique, column: barcode}
  log:
    mode: replace
    expectations:
      - {kind: between, column: qty, min: 0}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    init_project(tmp_path, name="t")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write(SPEC)
    monkeypatch.setenv("CONVEYOR_DATA_KEY", generate_key())
    with Project.open(tmp_path) as proj:
        yield proj


def _stock(skus: range, *, shop: str = "a", qty: int = 1, barcode: int = 0) -> pa.Table:
    return pa.table(
        {
            "shop": [shop] * len(skus),
            "sku": list(skus),
            "qty": [qty] * len(skus),
            "barcode": [barcode + s for s in skus],
            "supplier": [f"supplier-{s}" for s in skus],
        }
    )


def test_upsert_replaces_rows_by_key_and_reuses_untouched_parts(project: Project) -> None:
    data, repo = project.data, project.data.versions
    first = data.ingest("stock", _stock(range(0, 10), shop="a"))
    second = data.ingest("stock", _stock(range(0, 10), shop="b", barcode=100))
    assert second.version is not None and second.rows_total == 20
    # Shop b's skus 5..14 again: 5 replaced, 5 new; shop a's part is untouched and reused.
    third = data.ingest("stock", _stock(range(5, 15), shop="b", qty=9, barcode=1000))
    assert (third.mode, third.rows_replaced, third.rows_accepted) == ("upsert", 5, 10)
    assert third.version is not None and third.rows_total == 25 and third.key == ("shop", "sku")
    parts = repo.parts(third.version)
    assert first.version is not None and parts[0] == repo.parts(first.version)[0]
    rows = repo.read(third.version).to_pylist()
    by_key = {(r["shop"], r["sku"]): r for r in rows}
    assert len(by_key) == len(rows) == 25
    assert by_key[("b", 4)]["qty"] == 1 and by_key[("b", 5)]["qty"] == 9
    assert by_key[("b", 14)]["supplier"] == "supplier-14"  # decrypted: still sealed at rest
    assert repo.read_batch(third.version).num_rows == 10  # the batch is the last part


def test_unique_holds_for_the_whole_version_and_a_repeated_key_is_quarantined(
    project: Project,
) -> None:
    data = project.data
    data.ingest("stock", _stock(range(0, 10)))
    # Barcodes 5..9 are stored already (under other keys): those rows are quarantined.
    clash = data.ingest("stock", _stock(range(100, 110), barcode=-95), mode="append")
    assert (clash.rows_accepted, clash.rows_quarantined) == (5, 5)
    assert clash.quarantine is not None and clash.quarantine.reasons == {"barcode.unique": 5}
    check = next(c for c in clash.report.checks if c.name == "barcode.unique")
    assert "judged with the rows already stored" in check.detail
    # A key repeated inside one batch is ambiguous: both rows wait in quarantine.
    twice = pa.concat_tables([_stock(range(200, 202), barcode=500)] * 2)
    twice = twice.set_column(3, "barcode", pa.array([500, 501, 502, 503]))
    result = data.ingest("stock", twice)
    assert result.quarantine is not None and result.quarantine.reasons == {"shop+sku.unique": 4}
    # A null key never gets in.
    nulls = _stock(range(300, 302), barcode=900).set_column(
        1, "sku", pa.array([None, 301], pa.int64())
    )
    assert data.ingest("stock", nulls).quarantine.reasons == {"sku.not_null": 1}


def test_a_repeated_batch_is_refused_unless_forced(project: Project) -> None:
    batch = _stock(range(0, 5))
    first = project.data.ingest("log", batch)
    with pytest.raises(BatchAlreadyIngestedError, match="already ingested into log as log@1") as e:
        project.data.ingest("log", batch)
    assert isinstance(e.value, ConflictError) and e.value.context["version"] == "log@1"
    assert e.value.code == "batch_already_ingested"
    forced = project.data.ingest("log", batch, force=True)
    assert forced.version is not None and forced.version.number == 2
    assert forced.batch_hash == first.batch_hash == forced.version.batch_hash
    assert forced.mode == "replace" and forced.rows_total == 5  # replace: only the batch


def test_undeclared_names_are_refused_with_the_closest_declared_one(
    project: Project, tmp_path: Path
) -> None:
    with pytest.raises(UndeclaredDatasetError, match="did you mean 'stock'") as e:
        project.data.ingest("stocks", _stock(range(3)))
    assert isinstance(e.value, NotFoundError) and "new=True" in e.value.message
    made = project.data.ingest("scratch", _stock(range(3)), new=True)
    assert made.new_dataset is not None
    assert [c["name"] for c in made.new_dataset["columns"]][:2] == ["shop", "sku"]
    assert project.data.ingest("scratch", _stock(range(3, 6))).new_dataset is None  # known now
    # A project that declares no data set ingests ad hoc from Python, as before.
    bare = tmp_path / "bare"
    init_project(bare, name="bare")
    with Project.open(bare) as other:
        assert other.data.ingest("anything", pa.table({"x": [1, 2]})).version is not None


def test_an_unknown_column_is_a_config_error_a_removed_one_is_bad_data(
    project: Project,
) -> None:
    with pytest.raises(ExpectationColumnError, match="did you mean 'qtty'") as e:
        project.data.ingest("log", pa.table({"qtty": [1, 2]}))
    assert isinstance(e.value, ConfigError) and e.value.context["columns"] == ["qtty"]
    assert project.data.versions.datasets() == []  # nothing stored, nothing quarantined
    project.data.ingest("log", pa.table({"qty": [1, 2], "note": ["x", "y"]}))
    # qty was in the accepted version: a batch without it is a data problem, quarantined.
    gone = project.data.ingest("log", pa.table({"note": ["z"]}))
    assert gone.batch_rejected and gone.rows_quarantined == 1


def test_upsert_needs_a_key_and_a_mode_is_checked(project: Project) -> None:
    with pytest.raises(ConfigError, match="has no key: upsert needs one"):
        project.data.ingest("log", _stock(range(2)), mode="upsert")
    with pytest.raises(InvalidInputError, match="mode 'merge': expected one of append"):
        project.data.ingest("log", _stock(range(2)), mode="merge")


def test_replay_joins_the_latest_version_even_in_replace_mode(project: Project) -> None:
    project.data.ingest("log", pa.table({"qty": [1, 2, 3]}))
    bad = project.data.ingest("log", pa.table({"qty": [4, -1]}))
    assert bad.quarantine is not None and bad.rows_total == 1
    replayed = project.data.replay(bad.quarantine.id)
    assert replayed.rows_quarantined == 1 and replayed.version is None  # -1 still fails


def test_drift_of_an_appended_version_reads_its_own_batch(project: Project) -> None:
    data = project.data
    for start in (0, 100, 200):
        data.ingest(
            "scratch",
            pa.table({"v": [float(i % 10) + start / 1e6 for i in range(start, start + 100)]}),
            new=True,
        )
    shifted = data.ingest("scratch", pa.table({"v": [50.0 + i % 10 for i in range(100)]}))
    assert shifted.rows_total == 400
    batch = data.drift("scratch@1", "scratch@4")
    assert batch.compared["current"] == {"ref": "scratch@4", "rows": 100, "scope": "batch"}
    assert not batch.report.passed
    whole = data.drift("scratch@1", "scratch@4", compare="version")
    assert whole.compared["current"]["rows"] == 400
    assert whole.describe() == "compared 100 rows (scratch@1) with 400 rows (scratch@4)"


def test_validate_counts_the_stored_keys_for_a_parquet_batch_too(tmp_path: Path) -> None:
    path = tmp_path / "batch.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3]}), path)
    result = validate(
        path,
        [{"kind": "unique", "column": "id"}],
        subject="dataset:t",
        split=False,
        existing=pa.table({"id": pa.array([3, 4], pa.int32()), "other": ["a", "b"]}),
    )
    (check,) = result.report.checks
    assert not check.passed and check.detail.startswith("1 of 3 rows")
