"""Decoded rollups are kept in memory: a server answering the dashboard again and again
decodes each rollup file once, reads a file written again under the same name afresh,
and keeps no more than its byte limit."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from monitoring_support import START, predictions, write

from conveyor.monitoring import compact
from conveyor.monitoring.columnar import write_durably
from conveyor.monitoring.rollups import FOLDER, _Decoded
from conveyor.project import Project
from fresh_python import loaded_of

pytestmark = pytest.mark.parametrize("backends", ["sqlite"], indirect=True)

SINCE, UNTIL = START, START + timedelta(hours=4)


def _requests(project: Project) -> int:
    report = project.monitoring.system(since=SINCE, until=UNTIL, window=timedelta(minutes=5))
    assert any("rollups" in note for note in report.notes)
    return sum(row["answered"] for row in report.windows)


def test_a_rollup_is_decoded_once_and_again_when_written_anew(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(project, predictions(3_000, seed=5))
    compact(project)
    reads: list[str] = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda path, *a, **k: reads.append(path) or real(path))

    first = _requests(project)
    assert first > 0 and reads  # decoded from disk
    read_first = len(reads)
    assert _requests(project) == first
    assert len(reads) == read_first  # the second answer read no rollup again

    # one prediction rollup rewritten with every count doubled (as a restore would put a
    # different file under the same name): the next answer reads it again and counts it
    root = Path(project.artifacts.root) / FOLDER
    path = sorted(root.glob("kind=prediction/*/*/*.parquet"))[0]
    table = real(path)
    doubled = pc.multiply(table["n"], 2)
    write_durably(table.set_column(table.schema.get_field_index("n"), "n", doubled), path)
    assert _requests(project) == first + pc.sum(table["n"]).as_py()
    assert str(path) in reads[read_first:]


def test_the_decoded_rollups_stay_within_their_byte_limit(project: Project) -> None:
    write(project, predictions(3_000, seed=6))
    compact(project, batch_events=400)
    files = sorted(str(p) for p in (Path(project.artifacts.root) / FOLDER).rglob("*.parquet"))
    assert len(files) > 4
    one = _Decoded(1 << 40).get(files[0])[0].nbytes
    decoded = _Decoded(limit=3 * one)
    for path in files:
        decoded.get(path)
        assert decoded.bytes <= decoded.limit or len(decoded._tables) == 1
    # the most recently read are the ones kept
    kept = [key[0] for key in decoded._tables]
    assert kept == files[-len(kept) :]
    # rows of the range only, without a copy when a file lies wholly inside it
    path = next(f for f in reversed(files) if "kind=prediction/" in f)
    table, low, high = decoded.get(path)
    assert low <= high
    whole = decoded.rows([path], ["minute_us"], low, high + 1)
    assert whole is not None and whole["minute_us"].equals(table["minute_us"])
    part = decoded.rows([path], ["minute_us"], low + 1, high + 1)
    assert part is not None and part.num_rows < table.num_rows
    assert pc.min(part["minute_us"]).as_py() > low


def test_a_server_decodes_the_last_days_rollups_after_start(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard warms the cache in the background, so the first fetch of a day's
    traffic does not decode; a stopped warm-up decodes nothing."""
    import time
    from datetime import UTC, datetime

    from conveyor.dashboard import http as dashboard_http
    from conveyor.monitoring import rollups
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    recent = datetime.now(UTC) - timedelta(hours=3)
    write(project, predictions(2_000, start=recent, seed=7))
    compact(project)
    root = Path(project.artifacts.root) / FOLDER
    files = {str(p) for p in root.rglob("*.parquet")}
    assert files
    rollups._DECODED.clear()
    assert rollups.warm(project, stop=lambda: True) == 0 and rollups._DECODED.bytes == 0

    monkeypatch.setattr(dashboard_http, "WARM_AFTER_S", 0.0)
    server = ThreadedServer(create_app(project))
    server.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            decoded = {key[0] for key in rollups._DECODED._tables}
            if files <= decoded:
                break
            time.sleep(0.05)
        assert files <= {key[0] for key in rollups._DECODED._tables}
    finally:
        server.stop()


def test_with_nothing_compacted_the_warm_up_loads_nothing(project: Project) -> None:
    """A server whose project has no rollups yet (a new project, a benchmark, a server that
    only predicts) does not import the query layer (the ORM's tables, a store session) five
    seconds after start: that import held the interpreter lock for a few hundred
    milliseconds of CPU while requests were in flight (a c=1 request then waited up to 26
    ms, where it otherwise takes a third of one)."""
    loaded = loaded_of(
        {"sqlalchemy.orm", "conveyor.monitoring.tables", "duckdb"},
        f"""
import sys
from conveyor.project import Project
from conveyor.monitoring import rollups
project = Project.open({str(project.root)!r})
project.events  # a server opens its event log
assert "sqlalchemy.orm" not in sys.modules
assert rollups.warm(project) == 0
""",
    )
    assert loaded == []
