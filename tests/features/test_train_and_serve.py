"""A model trained on a feature service: the frame joined point-in-time, the lineage in the
registry and in ``conveyor models show``, and the server predicting from entity keys with
the features read online (recorded in the prediction event; a missing key is refused (422), a
store that does not answer a 503)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pytest
from features_support import MINUTE, spend_project
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.events.schema import Event
from conveyor.features import get_online_features, get_training_frame
from conveyor.features.lineage import FeaturesNotAppliedError
from conveyor.features.materialize import materialize
from conveyor.project import Project
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until
from conveyor.training.flow import prepare, train_candidate
from conveyor.training.settings import model_spec

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=2, minutes=10)

MODEL_SPEC = """
models:
  spend_model:
    train: trainer:fit
    dataset: labels
    feature_service: fraud
    entity_time: as_of
    target: label
    holdout: {by: random, fraction: 0.25}
serving: {auth: disabled, poll_interval_s: 0.2}
"""

TRAINER = """
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline


def fit(X, y, *, seed):
    # keep_empty_features: a column with no value at all in a small frame is kept (as 0).
    return make_pipeline(SimpleImputer(keep_empty_features=True), LogisticRegression()).fit(X, y)
"""


def _labels() -> pa.Table:
    """40 entity/label rows of customers 1 and 2 between t0 - 10 min and t0 + 3 h."""
    ids, times, labels = [], [], []
    for i in range(40):
        ids.append(1 + i % 2)
        times.append(T0 + (i * 5 - 10) * MINUTE)
        labels.append(int(i % 3 == 0))
    return pa.table(
        {
            "customer_id": pa.array(ids, pa.int64()),
            "as_of": pa.array(times, pa.timestamp("us", tz="UTC")),
            "label": labels,
        }
    )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    opened = spend_project(tmp_path, T0)
    opened.close()
    with (tmp_path / "conveyor.yaml").open("a") as spec:
        spec.write(MODEL_SPEC)
    (tmp_path / "trainer.py").write_text(TRAINER)
    reopened = Project.open(tmp_path, env={})
    reopened.data.ingest("labels", _labels(), actor="test", new=True)
    try:
        yield reopened
    finally:
        reopened.close()


def test_training_needs_the_service_applied(project: Project) -> None:
    with pytest.raises(FeaturesNotAppliedError, match="never applied"):
        train_candidate(project, "spend_model", actor="test")


def test_the_frame_is_joined_point_in_time_and_the_lineage_recorded(project: Project) -> None:
    project.features.apply(actor="test")
    prepared = prepare(project, model_spec(project.spec, "spend_model"))
    # the service's features, in its order, are the model's inputs
    assert prepared.features == [
        "amount",
        "amount_sum_1h",
        "amount_sum_24h",
        "amount_count_1h",
        "amount_count_24h",
        "amount_x2",
    ]
    frame = prepared.frame
    # customer 1 at t0 + 40 min: its rows at t0 (10) and t0 + 30 min (20) are visible
    row = frame[(frame.customer_id == 1) & (frame.as_of == pd.Timestamp(T0 + 40 * MINUTE))]
    assert row[["amount", "amount_sum_1h", "amount_count_24h", "amount_x2"]].values.tolist() == [
        [20.0, 30.0, 2, 40.0]
    ]
    # customer 2 at t0 + 10 min: its only row was written an hour late (as known at: unseen)
    row = frame[(frame.customer_id == 2) & (frame.as_of == pd.Timestamp(T0 + 15 * MINUTE))]
    assert row["amount"].isna().all() and len(row) == 1
    # customer 1 before any row: kept, with nulls
    assert frame[frame.as_of < pd.Timestamp(T0)]["amount"].isna().all()
    assert len(frame) == 40
    # the public function builds the same frame from the same rows
    labels_table = project.data.versions.read(prepared.version, purpose="test")
    public = get_training_frame(project, labels_table, "fraud", entity_time="as_of")
    assert public.to_pandas()[prepared.features].equals(frame[prepared.features])

    candidate = train_candidate(project, "spend_model", actor="test")
    version = candidate.version
    labels = project.data.versions.latest("labels")
    tx = project.data.versions.latest("tx")
    assert labels is not None and tx is not None
    assert version.dataset_version_ids == [labels.id, tx.id]
    (used,) = version.inputs
    assert used["kind"] == "feature_service" and used["name"] == "fraud"
    assert used["version"] == 1
    assert used["views"] == {"spend": {"version": 1, "datasets": ["tx@1"], "path": None}}
    assert project.registry.get("spend_model", 1).inputs == version.inputs  # read back

    shown = CliRunner().invoke(app, ["models", "show", "spend_model@1", "-C", str(project.root)])
    assert shown.exit_code == 0, shown.output
    assert "tx@1 -> view spend v1 -> service fraud v1 -> spend_model@1" in shown.output
    assert "labels@1 -> spend_model@1" in shown.output
    as_json = CliRunner().invoke(
        app, ["models", "show", "spend_model@1", "--json", "-C", str(project.root)]
    )
    assert json.loads(as_json.output)["lineage"] == [
        ["labels@1", "spend_model@1"],
        ["tx@1", "view spend v1", "service fraud v1", "spend_model@1"],
    ]


def test_a_view_changed_since_apply_is_refused(project: Project) -> None:
    project.features.apply(actor="test")
    root = project.root
    project.close()
    text = (root / "conveyor.yaml").read_text().replace("ttl: 1h", "ttl: 2h")
    (root / "conveyor.yaml").write_text(text)
    with (
        Project.open(root, env={}) as changed,
        pytest.raises(FeaturesNotAppliedError, match="view 'spend' changed"),
    ):
        train_candidate(changed, "spend_model", actor="test")


def _serve(project: Project) -> ThreadedServer:
    RouteStore(project.store, project.events, project.registry).set(
        "spend_model", RoutePolicy.fixed(1), actor="test"
    )
    server = ThreadedServer(create_app(project))
    server.start()
    return server


def test_the_server_predicts_from_entity_keys(project: Project) -> None:
    project.features.apply(actor="test")
    candidate = train_candidate(project, "spend_model", actor="test")
    materialize(project)
    server = _serve(project)
    try:
        url = f"{server.url}/v1/models/spend_model/predict"
        answer = httpx.post(url, json={"records": [{"customer_id": 1}, {"customer_id": 2}]})
        assert answer.status_code == 200, answer.text
        online = get_online_features(project, [{"customer_id": 1}, {"customer_id": 2}], "fraud")
        features = candidate.version.signature["inputs"]  # type: ignore[index]
        names = [c["name"] for c in features]
        expected = project.registry.load(candidate.version).predict(
            pd.DataFrame([{n: o["features"][n] for n in names} for o in online], dtype=float)
        )
        assert answer.json()["predictions"] == expected.tolist()

        def recorded() -> Sequence[Event]:
            project.events.flush()
            return project.events.query(kind="prediction", subject="spend_model").items

        wait_until(lambda: len(recorded()) == 1, timeout=10, message="the prediction event")
        (event,) = recorded()
        looked_up = event.payload["features"]
        assert (looked_up["service"], looked_up["version"]) == ("fraud", 1)
        first, second = looked_up["rows"]
        assert first["values"]["amount"] == 40.0 and first["missing"] == []
        # customer 2's only row is past its 1 h TTL: not materialized, so missing
        assert second["values"]["amount"] is None and second["missing"] == ["amount"]

        # a customer never seen: its counts and sums are 0, as in the training frame
        # (an entity without rows), and listed so; the rest is missing
        new = httpx.post(url, json={"records": [{"customer_id": 3}]})
        assert new.status_code == 200, new.text
        wait_until(lambda: len(recorded()) == 2, timeout=10, message="the second event")
        third = next(e for e in recorded() if e.id != event.id).payload["features"]["rows"][0]
        assert third["zero"] == [
            "amount_count_1h",
            "amount_count_24h",
            "amount_sum_1h",
            "amount_sum_24h",
        ]
        assert third["values"]["amount_count_24h"] == 0 and third["missing"] == ["amount"]
        frame = get_training_frame(
            project,
            pa.table({"customer_id": [3], "event_timestamp": pa.array([NOW], pa.timestamp("us"))}),
            "fraud",
        ).to_pylist()[0]
        assert all(frame[f] == 0 for f in third["zero"]) and frame["amount"] is None

        # a row without its entity key: refused as any bad input is, naming it
        bad = httpx.post(url, json={"records": [{"customer": 1}]})
        assert bad.status_code == 422 and bad.json()["field"] == "customer_id"
    finally:
        server.stop()


def test_an_online_store_that_does_not_answer_is_a_503(project: Project) -> None:
    project.features.apply(actor="test")
    train_candidate(project, "spend_model", actor="test")
    root = project.root
    project.close()
    # Nothing listens on port 9: the online store refuses every connection.
    with Project.open(root, env={"CONVEYOR_ONLINE": "redis://127.0.0.1:9/0"}) as cut:
        server = _serve(cut)
        try:
            answer = httpx.post(
                f"{server.url}/v1/models/spend_model/predict",
                json={"records": [{"customer_id": 1}]},
                timeout=30,
            )
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "backend_unavailable"
        finally:
            server.stop()
