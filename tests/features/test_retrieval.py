"""Training frames from the spec's definitions: plain features point in time (TTL, as known
at), aggregates over windows, on-demand features by the same function, names as defined."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from features_support import spend_project, timestamps

from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.project import Project

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _ts(*offsets: timedelta) -> pa.Array:
    return timestamps(T0, *offsets)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return spend_project(tmp_path, T0)


def _entities() -> pa.Table:
    m = timedelta(minutes=1)
    return pa.table(
        {
            "customer_id": pa.array([1, 1, 2, 3], pa.int64()),
            "event_timestamp": _ts(45 * m, 210 * m, 10 * m, 0 * m),
            "label": [0, 1, 0, 1],
        }
    )


def test_a_service_frame_is_point_in_time_correct(project: Project) -> None:
    with project:
        frame = project.features.training_frame(_entities(), "fraud").to_pydict()
    assert frame["label"] == [0, 1, 0, 1]  # the entity frame's own columns stay, in order
    # 1 @ 0:45: 20 (0:30); @ 3:30: 40 (2:00) is 1.5 h old, beyond the 1 h TTL: missing.
    # 2 @ 0:10: its only row was written at 1:00, after the entity time: not known yet.
    assert frame["amount"] == [20.0, None, None, None]
    assert frame["amount_sum_1h"] == [30.0, 0.0, 0.0, 0.0]
    assert frame["amount_count_1h"] == [2, 0, 0, 0]
    assert frame["amount_sum_24h"] == [30.0, 70.0, 0.0, 0.0]
    assert frame["amount_count_24h"] == [2, 3, 0, 0]
    assert frame["amount_x2"] == [40.0, None, None, None]  # on-demand, from the joined value


def test_as_known_at_off_lets_a_backfill_count(project: Project) -> None:
    with project:
        frame = project.features.training_frame(
            _entities(), ["spend:amount", "spend:amount_sum_1h"], as_known_at=False
        ).to_pydict()
    assert frame["amount"] == [20.0, None, 5.0, None]
    assert frame["amount_sum_1h"] == [30.0, 0.0, 5.0, 0.0]
    assert "amount_count_1h" not in frame  # only what was asked for


def test_unknown_services_and_features_and_bad_frames_are_named(project: Project) -> None:
    with project:
        with pytest.raises(NotFoundError, match="no feature service 'frod'"):
            project.features.training_frame(_entities(), "frod")
        with pytest.raises(NotFoundError, match="has no feature 'amount_sum_2h'"):
            project.features.training_frame(_entities(), ["spend:amount_sum_2h"])
        with pytest.raises(InvalidInputError, match="event_timestamp") as missing:
            project.features.training_frame(
                _entities().drop_columns(["event_timestamp"]), ["spend:amount"]
            )
        assert missing.value.context.get("field") == "event_timestamp"
