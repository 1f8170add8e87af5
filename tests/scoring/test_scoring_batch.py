"""Batch scoring in this process (workers=0): files, CSV splits, rejected rows, the run
record, the manifest, idempotent re-runs, data set versions and bad input."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scoring_support import (
    FEATURES,
    expected,
    make_project,
    read_output,
    rows,
    write_parquet_folder,
)

from conveyor.checks.persist import save_report
from conveyor.checks.result import CheckResult, Report
from conveyor.errors import (
    ConflictError,
    GateFailedError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.project import Project
from conveyor.registry.promotion import gate_subject
from conveyor.scoring import score_batch
from conveyor.scoring.rows import PREDICTION, REASON


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with make_project(tmp_path / "proj") as opened:
        yield opened


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_folder_of_parquet_is_scored_partition_by_partition(
    project: Project, tmp_path: Path
) -> None:
    source = write_parquet_folder(tmp_path / "in", files=3, rows_each=1000, row_group=400)
    out = tmp_path / "out"
    seen = []
    result = score_batch(
        project,
        "lr",
        input=str(tmp_path / "in"),
        output=str(out),
        workers=0,
        chunk_rows=150,
        progress=seen.append,
    )
    assert (result.rows, result.scored, result.rejected) == (3000, 3000, 0)
    assert result.partitions == 9 == result.scored_now  # 3 files x 3 row groups
    assert [p.partitions_done for p in seen] == list(range(1, 10))
    assert seen[-1].total_rows == 3000
    scored = read_output(out)
    assert scored.column("id").to_pylist() == list(range(3000))  # each row once
    assert scored.column_names == ["id", *FEATURES, PREDICTION]
    np.testing.assert_array_equal(
        scored.column(PREDICTION).to_numpy(), expected(project, source.sort_by("id"))
    )
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["model_version_id"] == result.version_id
    assert manifest["input_fingerprint"] == result.input_fingerprint
    assert manifest["rows"] == 3000 and len(manifest["partitions"]) == 9
    for part in manifest["partitions"]:
        assert _sha256(out / part["path"]) == part["sha256"]
        assert pq.read_metadata(out / part["path"]).num_rows == part["rows"]
    assert not list(out.glob(".tmp-*"))

    run = project.store.runs.get(result.run_id)
    assert (run.kind, run.name, run.status) == ("scoring", "lr@1", "succeeded")
    assert run.params["version_id"] == result.version_id
    assert run.params["input_fingerprint"] == result.input_fingerprint
    assert run.metrics["rows"] == 3000 and run.metrics["rejected"] == 0
    events = project.events.query(kind="scoring.*", limit=10).items
    assert {e.kind for e in events if e.payload["run_id"] == result.run_id} == {
        "scoring.batch_started",
        "scoring.batch_finished",
    }

    # Scoring the same input again writes the same partitions, byte for byte.
    again = score_batch(
        project, "lr@1", input=str(tmp_path / "in"), output=str(out), workers=0, chunk_rows=150
    )
    assert {r.sha256 for r in again.results} == {r.sha256 for r in result.results}
    assert read_output(out).num_rows == 3000


def test_csv_ranges_cover_every_line_once_and_bad_rows_are_kept_with_a_reason(
    project: Project, tmp_path: Path
) -> None:
    table = rows(500)
    frame = table.to_pandas()
    frame["f1"] = frame["f1"].astype(object)
    frame.loc[7, "f1"] = "oops"
    frame.loc[300, "f2"] = None
    (tmp_path / "in").mkdir()
    frame.to_csv(tmp_path / "in" / "rows.csv", index=False)
    out = tmp_path / "out"
    result = score_batch(
        project,
        "lr@1",
        input=str(tmp_path / "in"),
        output=str(out),
        workers=0,
        csv_split_bytes=4096,  # ~10 ranges: lines cut in the middle belong to one of them
    )
    assert result.partitions > 5
    assert (result.rows, result.scored, result.rejected) == (500, 498, 2)
    scored = read_output(out)
    assert scored.column("id").to_pylist() == [i for i in range(500) if i not in (7, 300)]
    assert scored.schema.field("f1").type == pa.float64()  # the signature's type, not text
    rejected = pa.concat_tables(
        [pq.read_table(p) for p in sorted((out / "rejected").glob("*.parquet"))]
    ).sort_by("id")
    assert rejected.column("id").to_pylist() == [7, 300]
    reasons = rejected.column(REASON).to_pylist()
    assert "'f1': not a number" in reasons[0]
    assert "'f2' is null" in reasons[1]
    run = project.store.runs.get(result.run_id)
    assert run.metrics["rejected"] == 2
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rejected"] == 2


def test_a_data_set_version_is_scored_with_its_lineage(project: Project, tmp_path: Path) -> None:
    version = project.data.ingest("customers", rows(300), new=True).version
    result = score_batch(
        project, "lr@1", input=f"dataset:{version.ref}", output=str(tmp_path / "out"), workers=0
    )
    assert result.rows == 300 and result.input == f"dataset:{version.ref}"
    assert result.input_fingerprint == version.content_hash
    run = project.store.runs.get(result.run_id)
    assert run.params["input_version"] == version.id
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["input_version"] == version.id


def test_a_version_that_failed_its_gates_needs_force_and_a_reason(
    project: Project, tmp_path: Path
) -> None:
    write_parquet_folder(tmp_path / "in", files=1, rows_each=50, row_group=50)
    failed = CheckResult("metric_floor", False, observed=0.6, threshold=0.8, detail="auc 0.6")
    report = Report.of(gate_subject("lr"), [failed], kind="gate", subject_version="1")
    save_report(project.store, report)
    args = {"input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "workers": 0}
    with pytest.raises(GateFailedError, match=r"lr@1 failed its gates .*metric_floor"):
        score_batch(project, "lr@1", **args)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="needs a --reason"):
        score_batch(project, "lr@1", force=True, **args)  # type: ignore[arg-type]
    result = score_batch(project, "lr@1", force=True, reason="backfill", **args)  # type: ignore[arg-type]
    run = project.store.runs.get(result.run_id)
    assert run.params["forced"] is True and run.params["reason"] == "backfill"


def test_bad_input_is_a_typed_error(project: Project, tmp_path: Path) -> None:
    write_parquet_folder(tmp_path / "in", files=1, rows_each=10, row_group=10)
    good = {"input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "workers": 0}
    with pytest.raises(NotFoundError, match="model 'nope' has no version"):
        score_batch(project, "nope", **good)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="there is no lr@7"):
        score_batch(project, "lr@7", **good)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="does not exist"):
        score_batch(project, "lr@1", input=str(tmp_path / "missing"), output="o", workers=0)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInputError, match=r"cannot read x\.parquet as Parquet"):
        score_batch(project, "lr@1", input=str(tmp_path / "bad"), output="o", workers=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="holds no Parquet or CSV file"):
        score_batch(project, "lr@1", input=str(tmp_path / "empty"), output="o", workers=0)
    with pytest.raises(InvalidInputError, match="needs a query"):
        score_batch(project, "lr@1", input="sql:sqlite:///x.db", output="o", workers=0)
    with pytest.raises(InvalidInputError, match="needs a table and a key"):
        score_batch(project, "lr@1", input=good["input"], output="sql:sqlite:///x.db", workers=0)
    with pytest.raises(InvalidInputError, match="unknown engine"):
        score_batch(project, "lr@1", engine="spark", **good)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="no scoring run"):
        score_batch(project, "lr@1", resume="0" * 32, **good)  # type: ignore[arg-type]
    assert project.store.runs.list(kind="scoring").items == []  # refused before any run


def test_a_resumed_run_refuses_a_changed_input(project: Project, tmp_path: Path) -> None:
    write_parquet_folder(tmp_path / "in", files=2, rows_each=20, row_group=10)
    args = {"input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "workers": 0}
    done = score_batch(project, "lr@1", **args)  # type: ignore[arg-type]
    with pytest.raises(ConflictError, match="already scored every partition"):
        score_batch(project, "lr@1", resume=done.run_id, **args)  # type: ignore[arg-type]
    failed = project.store.runs.start(
        "scoring", "lr@1", params=dict(project.store.runs.get(done.run_id).params)
    )
    project.store.runs.finish(failed.id, "failed", error="test")
    pq.write_table(rows(5, start=100), tmp_path / "in" / "part9.parquet")
    with pytest.raises(ConflictError, match="the input changed"):
        score_batch(project, "lr@1", resume=failed.id, **args)  # type: ignore[arg-type]


def test_a_resumed_run_keeps_the_cut_of_its_first_attempt(project: Project, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    rows(400).to_pandas().to_csv(tmp_path / "in" / "rows.csv", index=False)
    out = tmp_path / "out"
    args = {"input": str(tmp_path / "in"), "output": str(out), "workers": 0}
    first = score_batch(project, "lr@1", csv_split_bytes=2048, **args)  # type: ignore[arg-type]
    files = sorted(p.name for p in out.glob("part-*"))
    assert len(files) == first.partitions > 3
    params = project.store.runs.get(first.run_id).params
    assert params["cut"]["csv_split_bytes"] == 2048
    interrupted = project.store.runs.start("scoring", "lr@1", params=params)
    project.store.runs.finish(interrupted.id, "failed", error="killed")
    # Resumed without the split size: the first attempt's is used, so the same partitions
    # (the same files) are written, not the input cut another way beside them.
    resumed = score_batch(project, "lr@1", resume=interrupted.id, **args)  # type: ignore[arg-type]
    assert resumed.partitions == first.partitions
    assert sorted(p.name for p in out.glob("part-*")) == files
    assert read_output(out).column("id").to_pylist() == list(range(400))
