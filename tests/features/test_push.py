"""The push API: a pushed row is online at once and in the training frame point in time; a
later batch of older rows does not overwrite it; one bad value refuses the whole push and
nothing is written, online or offline; over Python, HTTP and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from features_support import online_spend_project, spend_project, timestamps

from cli_support import conveyor
from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.features.materialize import materialize, online_features
from conveyor.features.push import pushed_table
from conveyor.project import Project

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=2, minutes=10)  # the source's rows: T0, +30 min, +2 h (customer 1)
MINUTE = timedelta(minutes=1)


@pytest.fixture(params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    yield from online_spend_project(request.param, tmp_path, T0)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Project]:
    with spend_project(tmp_path, T0) as opened:
        yield opened


def amount(project: Project, customer: int) -> Any:
    (row,) = online_features(project, [{"customer_id": customer}], ["spend:amount"])
    return row["features"]["amount"], row["status"]["amount"]


def frame(project: Project, *moments: datetime) -> list[dict[str, Any]]:
    entity = pa.table(
        {
            "customer_id": pa.array([1] * len(moments), pa.int64()),
            "event_timestamp": pa.array(list(moments), pa.timestamp("us", "UTC")),
        }
    )
    return project.features.training_frame(
        entity, ["spend:amount", "spend:amount_count_24h"]
    ).to_pylist()


def pushes(project: Project) -> list[Any]:
    return list(project.events.query(kind="features.pushed", limit=100).items)


def test_a_pushed_row_is_online_at_once_and_in_the_training_frame(project: Project) -> None:
    pushed = project.features.push(
        "spend",
        [{"customer_id": 1, "ts": (NOW - MINUTE).isoformat(), "ingested_at": NOW, "amount": 77}],
        actor="stream",
    )
    assert (pushed.rows, pushed.written, pushed.logged) == (1, 1, True)
    assert amount(project, 1) == (77.0, "present")  # an int in a double feature: 77.0
    # Point in time: not before its event time, nor (as known at) before it was created.
    before, unknown, after = frame(project, NOW - 2 * MINUTE, NOW - MINUTE / 2, NOW + MINUTE)
    assert before["amount"] == 40.0 and before["amount_count_24h"] == 3
    assert unknown["amount"] == 40.0 and unknown["amount_count_24h"] == 3
    assert after["amount"] == 77.0 and after["amount_count_24h"] == 4
    (event,) = pushes(project)
    assert event.actor == "stream" and event.payload["rows"] == 1


def test_a_later_batch_of_older_rows_does_not_overwrite_a_pushed_row(project: Project) -> None:
    project.features.push(
        "spend", [{"customer_id": 1, "ts": NOW - MINUTE, "amount": 77.0}], actor="stream"
    )
    # An older row of customer 1 lands in the source after the push (created later).
    project.data.ingest(
        "tx",
        pa.table(
            {
                "customer_id": pa.array([1], pa.int64()),
                "ts": timestamps(NOW, -5 * MINUTE),
                "ingested_at": timestamps(NOW, 5 * MINUTE),
                "amount": [55.0],
            }
        ),
        actor="test",
        mode="append",
    )
    (done,) = materialize(project, ["spend"])
    assert done.rows == 6  # the source's 5 rows and the pushed one
    assert amount(project, 1) == (77.0, "present")
    (later,) = materialize(project, ["spend"])  # incremental: nothing new
    assert later.rows == 0 and amount(project, 1) == (77.0, "present")


def test_the_created_time_is_filled_in_and_the_same_rows_are_logged_once(local: Project) -> None:
    rows = [{"customer_id": 3, "ts": NOW - MINUTE, "amount": 1.5}]
    start = datetime.now(UTC)
    first = local.features.push("spend", rows)
    again = local.features.push("spend", rows)  # a retry: the same push
    assert first.logged and not again.logged and first.artifact == again.artifact
    logged = pushed_table(local, "spend")
    assert logged is not None and logged.num_rows == 1
    (created,) = logged.column("ingested_at").to_pylist()
    assert start <= created <= datetime.now(UTC)
    assert len(pushes(local)) == 2  # one event per call
    # Other values for the same moment are another push: created later, they win online.
    newer = local.features.push("spend", [{**rows[0], "amount": 2.5}])
    assert newer.logged and amount(local, 3) == (2.5, "present")


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"amount": "12"}, "amount", "feature 'amount' of view 'spend' is double, got str"),
        ({"amount": True}, "amount", "is double, got bool"),
        ({"ts": "yesterday"}, "ts", "event_time 'ts' of view 'spend' is a timestamp"),
        ({"ts": None}, "ts", "got null"),
        ({"customer_id": 1.5}, "customer_id", "join key 'customer_id' of view 'spend' is an int"),
        ({"ingested_at": 5}, "ingested_at", "created_time 'ingested_at'"),
        ({"amout": 1.0}, "amout", "'amout' is not a column of view 'spend'"),
        ({"amount": ...}, "amount", "row 1 has no feature 'amount'"),
    ],
)
def test_a_bad_value_refuses_the_push_and_nothing_is_written(
    local: Project, row: dict[str, Any], field: str, message: str
) -> None:
    good = {"customer_id": 1, "ts": NOW - MINUTE, "amount": 77.0}
    bad = {**good, "customer_id": 2, **row}
    bad = {k: v for k, v in bad.items() if v is not ...}
    with pytest.raises(InvalidInputError, match=message) as refused:
        local.features.push("spend", [good, bad])
    assert refused.value.context["field"] == field and refused.value.context["row"] == 1
    assert "nothing was written" in refused.value.message
    assert amount(local, 1) == (None, "missing")  # the good row was not written either
    assert pushed_table(local, "spend") is None
    assert pushes(local) == []


def test_an_unknown_view_or_no_rows_is_refused(local: Project) -> None:
    with pytest.raises(NotFoundError, match="no feature view 'spnd'"):
        local.features.push("spnd", [{"customer_id": 1}])
    with pytest.raises(InvalidInputError, match="at least one row"):
        local.features.push("spend", [])
    # An Arrow table is pushed as its rows.
    table = pa.table(
        {
            "customer_id": pa.array([4], pa.int64()),
            "ts": timestamps(NOW, -MINUTE),
            "amount": [3.0],
        }
    )
    assert local.features.push("spend", table).written == 1


# -- HTTP --------------------------------------------------------------------------------


def test_post_features_push_over_http(local: Project, tmp_path: Path) -> None:
    from conveyor.governance.keys import ApiKeys
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    token, _ = ApiKeys(local.store, local.events).create("stream", "deployer")
    server = ThreadedServer(create_app(local))
    server.start()
    client = httpx.Client(headers={"authorization": f"Bearer {token}"}, base_url=server.url)
    try:
        row = {"customer_id": 1, "ts": (NOW - MINUTE).isoformat(), "amount": 66.5}
        ok = client.post("/v1/features/push", json={"view": "spend", "rows": [row]})
        assert ok.status_code == 200, ok.text
        assert ok.json()["written"] == 1 and ok.json()["logged"] is True
        got = client.post(
            "/v1/features/get",
            json={"features": ["spend:amount"], "entities": [{"customer_id": 1}]},
        )
        assert got.json()["results"][0]["features"]["amount"] == 66.5
        bad = client.post(
            "/v1/features/push",
            json={"view": "spend", "rows": [row, {**row, "amount": "lots"}]},
        )
        assert bad.status_code == 400, bad.text
        body = bad.json()
        assert (body["code"], body["field"], body["row"]) == ("invalid_input", "amount", 1)
        unknown = client.post("/v1/features/push", json={"view": "spnd", "rows": [row]})
        assert unknown.status_code == 404 and "spnd" in unknown.json()["message"]
        empty = client.post("/v1/features/push", json={"view": "spend", "rows": []})
        assert empty.status_code == 400 and empty.json()["field"] == "rows"
        assert len(pushes(local)) == 1  # the refused pushes wrote nothing
    finally:
        client.close()
        server.stop()


def test_push_answers_503_when_the_online_store_is_down(tmp_path: Path) -> None:
    from conveyor.governance.keys import ApiKeys
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    with spend_project(tmp_path, T0, {"CONVEYOR_ONLINE": "redis://127.0.0.1:1/0"}) as down:
        token, _ = ApiKeys(down.store, down.events).create("stream", "deployer")
        server = ThreadedServer(create_app(down))
        server.start()
        try:
            row = {"customer_id": 1, "ts": (NOW - MINUTE).isoformat(), "amount": 1.0}
            answer = httpx.post(
                f"{server.url}/v1/features/push",
                json={"view": "spend", "rows": [row]},
                headers={"authorization": f"Bearer {token}"},
                timeout=30,
            )
        finally:
            server.stop()
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "backend_unavailable"
        # Logged offline before the online write failed: the next materialization (or the
        # same push again) writes it online.
        logged = pushed_table(down, "spend")
        assert logged is not None and logged.num_rows == 1


# -- CLI ---------------------------------------------------------------------------------


def _in_process(
    root: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The same command in this process (cli_support)."""
    return conveyor("features", "push", *args, "-C", str(root), cwd=root, input=stdin)


def _cli(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "features", "push", *args, "-C", str(root)],
        env=env,
        cwd=root,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_conveyor_features_push_reads_json_lines_parquet_and_stdin(local: Project) -> None:
    root = local.root
    lines = [
        {"customer_id": 1, "ts": (NOW - MINUTE).isoformat(), "amount": 11.0},
        {"customer_id": 2, "ts": (NOW - MINUTE).isoformat(), "amount": 22.0},
    ]
    (root / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    done = _cli(root, "spend", "--file", "rows.jsonl")
    assert done.returncode == 0, done.stderr
    assert "spend: 2 rows pushed: 2 written online" in done.stdout
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([3], pa.int64()),
                "ts": timestamps(NOW, -MINUTE),
                "amount": [33.0],
            }
        ),
        root / "rows.parquet",
    )
    parquet = _in_process(root, "spend", "--file", "rows.parquet", "--json")
    assert parquet.returncode == 0, parquet.stderr
    assert json.loads(parquet.stdout)["written"] == 1
    row = {"customer_id": 4, "ts": (NOW - MINUTE).isoformat(), "amount": "x"}
    refused = _in_process(root, "spend", "--file", "-", stdin=json.dumps(row) + "\n")
    assert refused.returncode == 1
    assert "row 0: feature 'amount' of view 'spend' is double, got str" in refused.stderr
    assert [amount(local, c)[0] for c in (1, 2, 3, 4)] == [11.0, 22.0, 33.0, None]
    broken = _in_process(root, "spend", "--file", "-", stdin="{not json\n")
    assert broken.returncode == 1 and "line 1 is not JSON" in broken.stderr
