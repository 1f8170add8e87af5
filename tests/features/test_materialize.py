"""The online side on SQLite and the real Redis: materialization, online reads with each
value's status, on-demand features computed as offline, and parity (online against the
offline path for now), which catches a value that differs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from features_support import online_spend_project
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.features.materialize import materialize, online_features, online_store, parity
from conveyor.project import Project

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=2, minutes=10)


@pytest.fixture(params=["sqlite", "redis"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    yield from online_spend_project(request.param, tmp_path, T0)


def test_materialized_values_are_read_with_their_status(project: Project) -> None:
    (done,) = materialize(project, now=NOW)
    # customer 2's only row is 2 h 10 old with a 1 h TTL: expired, so not written
    assert (done.rows, done.entities, done.written, done.expired) == (4, 2, 1, 1)
    assert done.aggregates == 2
    rows = online_features(
        project, [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 3}], "fraud", now=NOW
    )
    first, second, unknown = rows
    assert first["features"] == {
        "amount": 40.0,
        "amount_sum_1h": 40.0,
        "amount_sum_24h": 70.0,
        "amount_count_1h": 1,
        "amount_count_24h": 3,
        "amount_x2": 80.0,  # on-demand, by the function the training frame used
    }
    assert first["status"]["amount"] == "present" and first["status"]["amount_x2"] == "computed"
    assert second["features"]["amount"] is None and second["status"]["amount"] == "missing"
    assert second["features"]["amount_sum_24h"] == 5.0
    assert unknown["status"]["amount_sum_24h"] == "missing"
    # Later, the stored value is past its TTL: it reads as missing, and says expired.
    (later,) = online_features(
        project, [{"customer_id": 1}], ["spend:amount"], now=NOW + timedelta(hours=1)
    )
    assert later["features"]["amount"] is None and later["status"]["amount"] == "expired"


def test_parity_passes_then_names_a_value_that_differs(project: Project) -> None:
    materialize(project, now=NOW)
    report = parity(project, "fraud", now=NOW)
    assert report.passed, [c.detail for c in report.checks]
    assert report.checks[-1].observed == {"entities": 2, "values": 10, "mismatches": 0}
    # A value written online by another path, newer than the offline rows: caught.
    online_store(project).write(
        "spend",
        [{"customer_id": 1, "ts": NOW - timedelta(minutes=1), "amount": 99.0}],
        join_keys=["customer_id"],
        event_time="ts",
        features=["amount"],
        ttl=timedelta(hours=1),
    )
    drifted = parity(project, "fraud", now=NOW)
    (mismatch,) = [c for c in drifted.checks if c.name == "parity.amount"]
    assert mismatch.observed == {"key": {"customer_id": 1}, "online": 99.0, "offline": 40.0}
    assert not drifted.passed


def test_the_cli_materializes_gets_and_checks(project: Project) -> None:
    root = str(project.root)
    env = {"CONVEYOR_ONLINE": str(project.spec.backends.online)}
    runner = CliRunner(env=env)
    done = runner.invoke(app, ["features", "materialize", "-C", root])
    assert done.exit_code == 0 and "spend: 4 rows" in done.output, done.output
    got = runner.invoke(app, ["features", "get", "fraud", "-e", "customer_id=1", "-C", root])
    assert got.exit_code == 0 and "amount_count_24h = 3 (present)" in got.output, got.output
    checked = runner.invoke(app, ["features", "parity", "fraud", "-C", root])
    assert checked.exit_code == 0, checked.output
    unknown = runner.invoke(app, ["features", "get", "frod", "-e", "customer_id=1", "-C", root])
    assert unknown.exit_code == 1 and "no feature service 'frod'" in unknown.output


def test_post_features_get_answers_over_http(project: Project) -> None:
    import httpx

    from conveyor.governance.keys import ApiKeys
    from conveyor.serving.app import create_app
    from conveyor.serving.server import ThreadedServer

    materialize(project)
    token, _ = ApiKeys(project.store, project.events).create("app", "viewer")
    server = ThreadedServer(create_app(project))
    server.start()
    client = httpx.Client(headers={"authorization": f"Bearer {token}"})
    try:
        url = f"{server.url}/v1/features/get"
        post = client.post
        got = post(url, json={"service": "fraud", "entities": [{"customer_id": 1}]})
        assert got.status_code == 200, got.text
        (row,) = got.json()["results"]
        assert row["features"]["amount_count_24h"] == 3 and row["status"]["amount"] == "present"
        unknown = post(url, json={"service": "frod", "entities": [{"customer_id": 1}]})
        assert unknown.status_code == 404 and "frod" in unknown.json()["message"]
        bad = post(url, json={"service": "fraud", "entities": []})
        assert bad.status_code == 400 and bad.json()["field"] == "entities"
        both = post(url, json={"service": "fraud", "features": ["spend:amount"], "entities": [{}]})
        assert both.status_code == 400 and both.json()["code"] == "invalid_input"
    finally:
        client.close()
        server.stop()
