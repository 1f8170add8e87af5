"""Registering, finding and listing versions, with their lineage, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from registry_support import Doubler

from conveyor.data.versions import DatasetRepository
from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.registry import Registry
from conveyor.registry.tables import ModelVersionRecord, RegisteredModelRecord


def test_versions_are_numbered_and_immutable_snapshots(registry: Registry) -> None:
    v1 = registry.register("fraud", Doubler(1.0), params={"factor": 1.0}, metrics={"auc": 0.8})
    v2 = registry.register("fraud", Doubler(2.0), metrics={"auc": 0.9}, tags={"team": "risk"})
    other = registry.register("churn", Doubler(5.0))
    assert (v1.number, v2.number, other.number) == (1, 2, 1)
    assert v1.artifact_digest != v2.artifact_digest
    assert registry.get("fraud", 1) == v1
    assert registry.get("fraud", "latest") == v2
    assert registry.resolve("fraud") == v2
    assert registry.resolve("fraud@1") == v1
    assert registry.resolve(v1.id) == v1
    assert v2.tags == {"team": "risk"} and v1.params == {"factor": 1.0}
    assert [m["name"] for m in registry.models()] == ["churn", "fraud"]
    event = registry.events.latest(1, kind="model.registered", subject="fraud")[0]  # type: ignore[union-attr]
    assert event.payload["version_id"] == v2.id and event.subject_version == "2"


def test_unknown_versions_and_bad_input_are_named(registry: Registry) -> None:
    registry.register("fraud", Doubler())
    with pytest.raises(NotFoundError, match="fraud@7"):
        registry.resolve("fraud@7")
    with pytest.raises(NotFoundError, match="alias 'champion'"):
        registry.resolve("fraud@champion")
    with pytest.raises(NotFoundError, match="'ghost'"):
        registry.get("ghost")
    with pytest.raises(InvalidInputError) as err:
        registry.register("bad name!", Doubler())
    assert err.value.context["field"] == "name"
    with pytest.raises(InvalidInputError, match="'auc'"):
        registry.register("fraud", Doubler(), metrics={"auc": float("nan")})
    with pytest.raises(InvalidInputError, match="cursor"):
        registry.list("fraud", cursor="not-a-cursor")
    assert registry.get("fraud").number == 1  # nothing half-registered


def test_lineage_is_recorded(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "code"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "train.py").write_text("print('train')\n")
    subprocess.run(["git", "add", "train.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.chdir(repo)

    datasets = DatasetRepository(registry.store, registry.artifacts)
    data = datasets.commit("transactions", pa.table({"x": [1, 2, 3]}))
    run = registry.store.runs.start("train", "fraud")
    parent = registry.register("fraud", Doubler(1.0))
    child = registry.register(
        "fraud",
        Doubler(2.0),
        run_id=run.id,
        parent="fraud@1",
        dataset_versions=[data],
        params={"lr": 0.1},
        metrics={"auc": 0.93},
    )
    assert (child.git_commit, child.git_dirty) == (head, False)
    assert child.run_id == run.id and child.parent_id == parent.id
    assert child.dataset_version_ids == [data.id]
    assert child.environment["python"].count(".") == 2
    assert registry.by_id(child.id) == child

    (repo / "train.py").write_text("print('changed')\n")
    dirty = Registry(registry.store, registry.artifacts).register("fraud", Doubler(3.0))
    assert (dirty.git_commit, dirty.git_dirty) == (head, True)


def test_concurrent_registrations_get_distinct_numbers(registry: Registry) -> None:
    numbers: list[int] = []
    barrier = threading.Barrier(4)

    def register(i: int) -> None:
        barrier.wait()
        for _ in range(3):
            numbers.append(registry.register("fraud", Doubler(float(i))).number)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 13))


def _bulk_versions(registry: Registry, count: int) -> list[str]:
    """``count`` versions over three models, inserted in one transaction (setup speed)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    with registry.store.session() as session:
        for name in ("fraud-a", "fraud-b", "churn"):
            session.add(RegisteredModelRecord(name=name, latest_version=0))
        session.flush()
        rows = []
        for i in range(count):
            name = ("fraud-a", "fraud-b", "churn")[i % 3]
            vid = uuid.uuid4().hex
            ids.append(vid)
            rows.append(
                ModelVersionRecord(
                    id=vid,
                    model=name,
                    number=i // 3 + 1,
                    flavor="python",
                    artifact_digest="sha256:" + "0" * 64,
                    artifact_size=1,
                    signature=None,
                    libraries={},
                    params={},
                    metrics={},
                    tags={"parity": "even" if i % 2 == 0 else "odd"},
                    environment={},
                    dataset_version_ids=[],
                    status="registered",
                    # Every tenth pair shares a timestamp: the id breaks the tie.
                    created_at=start + timedelta(seconds=i - i % 10 // 9),
                )
            )
        session.add_all(rows)
    return ids


def test_listing_and_search_page_through_thousands_without_gaps(registry: Registry) -> None:
    ids = _bulk_versions(registry, 3000)
    seen: list[str] = []
    cursor = None
    while True:
        page = registry.list(limit=250, cursor=cursor)
        seen.extend(v.id for v in page)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    times = [registry.by_id(i).created_at for i in seen[:5]]
    assert times == sorted(times, reverse=True)

    fraud_odd: list[str] = []
    cursor = None
    while True:
        page = registry.search("FRAUD", tag="parity=odd", limit=100, cursor=cursor)
        assert all(v.model.startswith("fraud") and v.tags["parity"] == "odd" for v in page)
        fraud_odd.extend(v.id for v in page)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    expected = [i for n, i in enumerate(ids) if n % 3 != 2 and n % 2 == 1]
    assert sorted(fraud_odd) == sorted(expected)
    assert len(registry.list("churn", limit=10_000)) == 1000
    assert len(registry.search(tag="parity", limit=10_000)) == 3000
    assert len(registry.search(tag="missing", limit=10)) == 0
    assert len(registry.search("%", limit=10)) == 0  # a LIKE wildcard is matched literally


def test_non_ascii_digits_are_not_version_numbers(registry: Registry) -> None:
    registry.register("fraud", Doubler(1.0))
    with pytest.raises(NotFoundError):
        registry.get("fraud", "³")  # str.isdigit() is true for it; int() is not
    with pytest.raises(NotFoundError):
        registry.resolve("fraud@\u0661")  # ARABIC-INDIC DIGIT ONE


def test_a_number_no_registry_can_hold_is_not_found(registry: Registry) -> None:
    """Found by schemathesis on PostgreSQL: 10**29 overflowed the integer column (a 500)."""
    registry.register("fraud", Doubler(1.0))
    for huge in (2**31, 10**29, "999999999999999999999999999999"):
        with pytest.raises(NotFoundError, match="fraud@"):
            registry.get("fraud", huge)
        with pytest.raises(NotFoundError):
            registry.resolve(f"fraud@{huge}")
    assert registry.get("fraud", "1").number == 1


def test_a_linear_versions_formula_is_recorded_read_back_and_recorded_again(
    registry: Registry,
) -> None:
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(120, 4)), columns=["a", "b", "c", "d"])
    model = LogisticRegression().fit(frame, (frame["a"] > frame["b"]).astype(int))
    version = registry.register("lin", model, signature_from=frame)
    assert version.compiled is not None and version.compiled["kind"] == "linear-formula/1"
    for read in (registry.get("lin", 1), registry.by_id(version.id), registry.list().items[0]):
        assert read.compiled == version.compiled  # the JSON column, on this store
    assert registry.artifacts.verify(version.compiled["digest"])

    with registry.store.session() as session:  # as a version registered before formulas
        session.execute(sa.update(ModelVersionRecord).values(compiled=None))
    assert registry.get("lin", 1).compiled is None
    again = registry.record_formula("lin@1", actor="ops")
    assert again.compiled == version.compiled  # the same formula, the same bytes
    assert registry.record_formula("lin@1") == again  # recorded once
    kinds = [e.kind for e in registry.events.query(kind="model.compiled")]  # type: ignore[union-attr]
    assert kinds == ["model.compiled"]
    registry.register("doubler", Doubler())
    with pytest.raises(InvalidInputError, match="doubler@1 has no formula to record"):
        registry.record_formula("doubler@1")
