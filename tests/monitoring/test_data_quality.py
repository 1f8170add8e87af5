"""Data-quality monitors from real ingest runs of the data layer: nulls, values out of range,
quarantined rows, a schema change and the newest row's age, read back per data set and
window from the event log (its columnar copy and its tail) and as alert metrics.

On SQLite and PostgreSQL (the ``backends`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from conveyor.project import Project, init_project

SPEC = """
datasets:
  tx:
    expectations:
      - {kind: not_null, column: amount}
      - {kind: between, column: amount, min: 0, max: 1000}
      - {kind: freshness, column: ts, max_lag: 7d}
serving: {auth: disabled}
"""


@pytest.fixture
def ingesting(tmp_path: Path, backends: dict[str, str]) -> Iterator[Project]:
    root = tmp_path / "proj"
    init_project(root, name="ingesting")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(SPEC)
    with Project.open(root, env=backends) as project:
        yield project


def batch(n: int, *, start: int, nulls: int, out_of_range: int, newest: datetime) -> pa.Table:
    """``n`` rows: the first ``nulls`` amounts missing, the next ``out_of_range`` above the
    range, the newest ``ts`` exactly ``newest``."""
    amounts: list[float | None] = [None] * nulls + [5000.0] * out_of_range
    amounts += [float(i % 900) for i in range(n - len(amounts))]
    times = [newest - timedelta(minutes=n - 1 - i) for i in range(n)]
    return pa.table({"id": list(range(start, start + n)), "amount": amounts, "ts": pa.array(times)})


def test_trends_equal_what_the_batches_held(ingesting: Project) -> None:
    from conveyor.monitoring import compact
    from conveyor.monitoring.data_quality import METRICS

    project = ingesting
    now = datetime.now(UTC)
    since = now - timedelta(seconds=1)
    first = project.data.ingest(
        "tx", batch(100, start=0, nulls=5, out_of_range=3, newest=now - timedelta(hours=1)), now=now
    )
    assert first.rows_quarantined == 8 and first.rows_accepted == 92
    compact(project)  # the first run from the copy, the second from the tail
    second = batch(50, start=100, nulls=0, out_of_range=0, newest=now - timedelta(minutes=10))
    channel = pa.array([None] * 10 + ["web"] * 40, pa.string())
    project.data.ingest("tx", second.append_column("channel", channel), now=now, mode="replace")
    project.events.flush()
    until = datetime.now(UTC) + timedelta(seconds=1)

    report = project.monitoring.data_quality(since=since, until=until, window=timedelta(days=1))
    assert report.snapshot.files and report.snapshot.tail_events
    rows = [w for w in report.windows if w["dataset"] == "tx"]
    assert sum(w["runs"] for w in rows) == 2 and sum(w["rows"] for w in rows) == 150
    whole = rows[-1] if len(rows) == 1 else None
    if whole is not None:  # one window unless the test straddled midnight UTC
        assert whole["nulls"] == {"id": 0, "amount": 5, "ts": 0, "channel": 10}
        assert whole["null_rate"] == pytest.approx(15 / (100 * 3 + 50 * 4))
        assert whole["worst_null_column"] == "channel"
        assert whole["worst_null_rate"] == pytest.approx(10 / 50)
        assert whole["out_of_range"] == 3
        assert whole["out_of_range_rate"] == pytest.approx(3 / 150)
        assert whole["failed_rate"] == pytest.approx(8 / 150)
        assert whole["quarantined"] == 8
        assert whole["quarantine_rate"] == pytest.approx(8 / 150)
        assert [c["added"] for c in whole["schema_changes"]] == [["channel"]]
        newest = now - timedelta(minutes=10)
        assert datetime.fromisoformat(whole["newest_row"]) == newest
        end = min(datetime.fromisoformat(whole["window"]) + timedelta(days=1), until)
        assert whole["freshness_s"] == pytest.approx((end - newest).total_seconds(), abs=1e-3)

    # The same as alert metrics.
    assert METRICS["data.quarantine_rate"](project, "tx", since, until) == pytest.approx(8 / 150)
    assert METRICS["data.schema_changed"](project, "tx", since, until) == 1.0
    assert METRICS["data.out_of_range_rate"](project, "tx", since, until) == pytest.approx(3 / 150)
    later = until + timedelta(hours=2)  # no new rows since: the lag grows
    age = METRICS["data.freshness_s"](project, "tx", later - timedelta(minutes=5), later)
    assert age == pytest.approx((later - (now - timedelta(minutes=10))).total_seconds(), abs=1e-3)
    assert METRICS["data.null_rate"](project, "nothing-here", since, until) is None
    # A data set with no run: nothing, not zero.
    assert project.monitoring.data_quality("other", since=since, until=until).windows == []


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)
def test_data_monitor_over_http_and_the_cli(ingesting: Project, backends: dict[str, str]) -> None:
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    project = ingesting
    now = datetime.now(UTC)
    project.data.ingest(
        "tx", batch(40, start=0, nulls=4, out_of_range=0, newest=now - timedelta(hours=3)), now=now
    )
    project.events.flush()
    server = ThreadedServer(create_app(project))
    server.start()
    try:
        answer = httpx.get(
            f"{server.url}/v1/monitor/data", params={"dataset": "tx", "since": "1h"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert [w["quarantined"] for w in body["windows"]] == [4]
        assert body["windows"][0]["nulls"]["amount"] == 4
        overview = httpx.get(f"{server.url}/v1/monitor/overview", timeout=30).json()
        assert [d["dataset"] for d in overview["datasets"]] == ["tx"]
        empty = httpx.get(f"{server.url}/v1/monitor/data", params={"dataset": " "}, timeout=30)
        assert empty.status_code == 422 and empty.json()["code"] == "invalid_input"
        backwards = httpx.get(
            f"{server.url}/v1/monitor/data", params={"since": "1h", "until": "2h"}, timeout=30
        )
        assert backwards.status_code == 422, backwards.text
    finally:
        server.stop()

    from typer.testing import CliRunner

    from conveyor.cli import app

    root = str(project.root)
    shown = CliRunner().invoke(
        app, ["monitor", "data", "tx", "--since", "1h", "-C", root], env=backends
    )
    assert shown.exit_code == 0, shown.output
    assert "tx" in shown.output and "10.00%" in shown.output  # 4 of 40 rows quarantined
    listed = CliRunner().invoke(app, ["monitor", "data", "--json", "-C", root], env=backends)
    assert listed.exit_code == 0, listed.output
    import json

    assert [w["rows"] for w in json.loads(listed.output)["windows"]] == [40]
