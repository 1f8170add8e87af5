"""A version trained on a feature service is scored with its features joined point-in-time,
as its training frame was: the same rows get the same features and the same predictions."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scoring_support import read_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))
from features_support import MINUTE, spend_project

from conveyor.errors import InvalidInputError
from conveyor.features import get_training_frame
from conveyor.project import Project
from conveyor.scoring import score_batch
from conveyor.training.flow import train_candidate

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2, minutes=10)

MODEL_SPEC = """
models:
  spend_model:
    train: trainer:fit
    dataset: labels
    feature_service: fraud
    entity_time: as_of
    target: label
    holdout: {by: random, fraction: 0.25}
"""

TRAINER = """
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline


def fit(X, y, *, seed):
    return make_pipeline(SimpleImputer(keep_empty_features=True), LogisticRegression()).fit(X, y)
"""


def _entities(n: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "customer_id": pa.array([1 + i % 2 for i in range(n)], pa.int64()),
            "as_of": pa.array(
                [T0 + (i * 5 - 10) * MINUTE for i in range(n)], pa.timestamp("us", tz="UTC")
            ),
            "label": [int(i % 3 == 0) for i in range(n)],
        }
    )


def test_features_are_joined_as_of_each_rows_time(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    spend_project(root, T0).close()
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(MODEL_SPEC)
    (root / "trainer.py").write_text(TRAINER)
    with Project.open(root, env={}) as project:
        project.data.ingest("labels", _entities(40).drop_columns(["id"]), actor="t", new=True)
        project.features.apply(actor="test")
        version = train_candidate(project, "spend_model", actor="test").version
        (tmp_path / "in").mkdir()
        entities = _entities(40).drop_columns(["label"])
        pq.write_table(entities, tmp_path / "in" / "rows.parquet")
        result = score_batch(
            project,
            version.ref,
            input=str(tmp_path / "in"),
            output=str(tmp_path / "out"),
            entity_time="as_of",
            workers=0,
        )
        assert (result.rows, result.rejected) == (40, 0)
        scored = read_output(tmp_path / "out")
        frame = get_training_frame(project, entities, "fraud", entity_time="as_of")
        features = [c["name"] for c in (version.signature or {})["inputs"]]
        for name in features:  # the same values as the training frame's, nulls included
            assert scored.column(name).to_pylist() == frame.column(name).to_pylist(), name
        model = project.registry.load(version.ref).model
        want = model.predict(frame.select(features).to_pandas())
        np.testing.assert_array_equal(scored.column("prediction").to_numpy(), want)

        with pytest.raises(InvalidInputError, match="'event_timestamp', the time its features"):
            score_batch(project, version.ref, input=str(tmp_path / "in"), output="o2", workers=0)
