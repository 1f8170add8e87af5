"""Monitor queries read the Parquet copy plus the log's uncompacted tail: the same answer
whatever has been compacted, checked against percentiles computed here from the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from monitoring_support import START, log_rows, predictions, write

from conveyor.errors import InvalidInputError
from conveyor.monitoring import compact
from conveyor.monitoring.query import MonitorQuery
from conveyor.project import Project, init_project
from fresh_python import loaded_of

SINCE = START + timedelta(minutes=25)
UNTIL = START + timedelta(hours=2, minutes=10)


def _expected(project: Project, window: timedelta, model: str | None = None) -> dict[Any, Any]:
    """(model, version, arm, window start) -> (requests, p50, p95, p99), from the log."""
    width = window // timedelta(microseconds=1)
    groups: dict[Any, list[float]] = defaultdict(list)
    lo = int(SINCE.timestamp() * 1_000_000)
    hi = int(UNTIL.timestamp() * 1_000_000)
    for row in log_rows(project):
        _, _, time_us, kind, subject, version, *_, payload = row
        if kind != "prediction" or not lo <= time_us < hi or model not in (None, subject):
            continue
        body = orjson.loads(payload)
        groups[(subject, version, body["arm"], time_us // width * width)].append(body["latency_ms"])
    return {
        key: (len(v), *np.percentile(v, [50, 95, 99]).tolist())  # linear, as quantile_cont
        for key, v in groups.items()
    }


def _answered(windows: list[dict[str, Any]]) -> dict[Any, Any]:
    from datetime import datetime

    out = {}
    for w in windows:
        start = int(datetime.fromisoformat(w["window"]).timestamp() * 1_000_000)
        out[(w["model"], w["version"], w["arm"], start)] = (
            w["requests"],
            w["p50_ms"],
            w["p95_ms"],
            w["p99_ms"],
        )
    return out


def _same(got: dict[Any, Any], want: dict[Any, Any], rel: float = 1e-9) -> None:
    assert got.keys() == want.keys()
    for key, (n, *qs) in want.items():
        assert got[key][0] == n, key
        assert got[key][1:] == pytest.approx(qs, rel=rel), key


def test_latency_is_the_same_from_the_tail_from_the_copy_and_from_both(
    project: Project,
) -> None:
    write(project, predictions(4_000))
    monitor = MonitorQuery(project)
    window = timedelta(minutes=5)
    want = _expected(project, window)
    assert len(want) > 50

    from_tail = monitor.latency(since=SINCE, until=UNTIL, window=window)
    assert from_tail.snapshot.files == [] and from_tail.snapshot.tail_events > 0
    _same(_answered(from_tail.windows), want)

    compact(project, batch_events=1_500, max_batches=1)  # part copied, part in the tail
    # exact=True: every event (the default reads the copy's per-minute rollups, within 1 %:
    # tests/monitoring/test_rollups_agree.py)
    both = monitor.latency(since=SINCE, until=UNTIL, window=window, exact=True)
    assert both.snapshot.files and 0 < both.snapshot.tail_events < from_tail.snapshot.tail_events
    _same(_answered(both.windows), want)
    _same(_answered(monitor.latency(since=SINCE, until=UNTIL, window=window).windows), want, 0.01)

    compact(project)
    compact(project)  # and the runs' own monitoring.compacted events
    copied = monitor.latency(since=SINCE, until=UNTIL, window=window, exact=True)
    assert copied.snapshot.tail_events == 0
    _same(_answered(copied.windows), want)
    _same(_answered(monitor.latency(since=SINCE, until=UNTIL, window=window).windows), want, 0.01)
    # Only the hours the range touches are read, not every file of the copy.
    every = monitor.latency(since=START, until=START + timedelta(hours=5), window=window)
    assert len(copied.snapshot.files) < len(every.snapshot.files)

    one = monitor.latency("churn", since=SINCE, until=UNTIL, window=window, exact=True)
    _same(_answered(one.windows), _expected(project, window, "churn"))
    body = one.to_dict()
    assert body["windows"][0]["errors"] is None and body["windows"][0]["error_rate"] is None
    assert "answered requests only" in body["notes"][0]
    assert all(w["cached"] <= w["requests"] <= w["rows"] for w in body["windows"])


def test_sql_runs_any_query_over_the_events_relation(project: Project) -> None:
    write(project, predictions(1_000))
    compact(project, max_batches=1, batch_events=600)
    got = MonitorQuery(project).sql(
        "SELECT kind, count(*) AS n, count(DISTINCT id) AS ids FROM events GROUP BY kind "
        "ORDER BY kind",
        kinds=["prediction", "route.set"],
        since=START,
        until=START + timedelta(hours=1),
    )
    rows = [
        r for r in log_rows(project) if r[2] < int((START + timedelta(hours=1)).timestamp() * 1e6)
    ]
    assert got.to_pylist() == [
        {"kind": k, "n": n, "ids": n}
        for k, n in sorted(
            {
                kind: sum(1 for r in rows if r[3] == kind) for kind in ("prediction", "route.set")
            }.items()
        )
    ]
    with pytest.raises(InvalidInputError, match="until"):
        MonitorQuery(project).latency(since=START, until=START)
    with pytest.raises(InvalidInputError, match="window"):
        MonitorQuery(project).latency(since=START, window=timedelta(milliseconds=10))


def test_importing_monitoring_loads_neither_duckdb_nor_arrow() -> None:
    code = "import conveyor.monitoring, conveyor.monitoring.capability"
    assert loaded_of(("duckdb", "pyarrow"), code) == []


def test_the_cli_compacts_and_reports_latency_and_the_server_answers(tmp_path: Path) -> None:
    """Through the installed ``conveyor`` script and ``GET /v1/monitor/latency``."""
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    root = tmp_path / "proj"
    init_project(root, name="watched")
    with Project.open(root, env={}) as project:
        write(project, predictions(600, start=START))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    conveyor = str(Path(sys.executable).with_name("conveyor"))

    def run(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [conveyor, *args, "-C", str(root), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    compacted = run("events", "compact")
    assert compacted["events"] == 601 and compacted["files"] >= 2  # and a route.set
    assert run("events", "compact")["events"] == 1  # the first run's monitoring.compacted
    assert run("events", "compact")["events"] == 0
    since, until = START.isoformat(), (START + timedelta(hours=1)).isoformat()
    report = run("monitor", "latency", "fraud", "--since", since, "--until", until)
    assert report["read"] == {**report["read"], "tail_events": 0}
    assert {w["model"] for w in report["windows"]} == {"fraud"}
    assert report["window_s"] == 60

    with Project.open(root, env={"CONVEYOR_SERVING__AUTH": "disabled"}) as project:
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            answer = httpx.get(
                server.url + "/v1/monitor/latency",
                params={"model": "fraud", "since": since, "until": until},
                timeout=30,
            )
            bad = httpx.get(server.url + "/v1/monitor/latency", params={"since": "soon"})
        finally:
            server.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json()["windows"] == report["windows"]
    assert bad.status_code == 422 and bad.json()["field"] == "since"
