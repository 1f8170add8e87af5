"""The read path's per-project cache: each project reads its own definitions and store, an
unknown name is refused on every call and never kept, and a closed project's entry goes."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from features_support import spend_project

from conveyor.errors import NotFoundError
from conveyor.features import serving_read
from conveyor.features.materialize import materialize, online_features

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(minutes=30)


def test_each_project_reads_its_own_store(tmp_path: Path) -> None:
    first = spend_project(tmp_path / "a", T0)
    second = spend_project(tmp_path / "b", T0 - timedelta(minutes=20))
    try:
        materialize(first, now=NOW)
        for _ in range(2):  # the second call is answered from the kept plan
            (a,) = online_features(first, [{"customer_id": 1}], "fraud", now=NOW)
            (b,) = online_features(second, [{"customer_id": 1}], "fraud", now=NOW)
            assert a["features"]["amount"] == 40.0 and a["status"]["amount"] == "present"
            assert b["features"]["amount"] is None and b["status"]["amount"] == "missing"
        assert serving_read._READERS[first].services.keys() == {"fraud"}
    finally:
        first.close()
        second.close()


def test_an_unknown_name_is_refused_every_time_and_not_kept(tmp_path: Path) -> None:
    project = spend_project(tmp_path, T0)
    try:
        for _ in range(2):
            with pytest.raises(NotFoundError, match="frod"):
                online_features(project, [{"customer_id": 1}], "frod")
            with pytest.raises(NotFoundError, match=r"no feature .nope."):
                online_features(project, [{"customer_id": 1}], ["spend:nope"])
        assert not serving_read._READERS[project].services
        (got,) = online_features(project, [{"customer_id": 1}], ["spend:amount"], now=NOW)
        assert list(got["features"]) == ["amount"]
    finally:
        project.close()


def test_a_dropped_project_leaves_the_cache(tmp_path: Path) -> None:
    project = spend_project(tmp_path, T0)
    online_features(project, [{"customer_id": 1}], "fraud", now=NOW)
    assert project in serving_read._READERS
    project.close()
    before = len(serving_read._READERS)
    del project
    gc.collect()
    assert len(serving_read._READERS) == before - 1
