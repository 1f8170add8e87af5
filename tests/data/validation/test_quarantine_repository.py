"""Quarantine batches on SQLite and the real PostgreSQL, rows in a file:// artifact store."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from conveyor.artifacts.store import ArtifactStore
from conveyor.data.quarantine import QuarantineBatch, QuarantineRepository, apply_policy
from conveyor.data.tables import DatasetRecord, DatasetVersionRecord
from conveyor.data.validation import REASON_COLUMN, Between, InSet, validate
from conveyor.errors import (
    ArtifactIntegrityError,
    ConcurrentUpdateError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.store.database import MetadataStore

ROWS = pa.table(
    {
        "id": [1, 2, 3],
        "amount": [-5.0, 70_000.0, 12.0],
        "city": ["Zürich", "東京", None],
        REASON_COLUMN: ["amount.between", "amount.between; city.in_set", "city.not_null"],
    }
)


@pytest.fixture
def stores(store_url: str, tmp_path: Path) -> Iterator[tuple[MetadataStore, ArtifactStore]]:
    with (
        MetadataStore.from_url(store_url) as store,
        ArtifactStore.from_url(f"file://{tmp_path}/artifacts") as artifacts,
    ):
        yield store, artifacts


@pytest.fixture
def repo(stores: tuple[MetadataStore, ArtifactStore]) -> QuarantineRepository:
    return QuarantineRepository(*stores)


def _version(store: MetadataStore, dataset: str) -> str:
    """A dataset version row to replay into (written directly: this test owns no versions)."""
    version_id = uuid.uuid4().hex
    with store.session() as session:
        if session.get(DatasetRecord, dataset) is None:
            session.add(DatasetRecord(name=dataset, latest_number=0))
            session.flush()
        session.add(
            DatasetVersionRecord(
                id=version_id,
                dataset=dataset,
                number=1,
                content_hash="sha256:" + "0" * 64,
                row_count=3,
                schema={"columns": []},
                source={},
                snapshot_digest="sha256:" + "0" * 64,
                snapshot_size=0,
            )
        )
    return version_id


def test_put_get_and_rows_round_trip(
    repo: QuarantineRepository, stores: tuple[MetadataStore, ArtifactStore]
) -> None:
    store, artifacts = stores
    batch = repo.put(
        "tx",
        ROWS,
        source={"kind": "csv", "path": "in/tx.csv"},
        encryption={"columns": ["city"], "key_id": "k1"},
    )
    assert isinstance(batch, QuarantineBatch)
    assert (batch.dataset, batch.row_count, batch.status, batch.version) == ("tx", 3, "pending", 1)
    assert batch.reasons == {"amount.between": 2, "city.in_set": 1, "city.not_null": 1}
    assert batch.source == {"kind": "csv", "path": "in/tx.csv"}
    assert batch.encryption == {"columns": ["city"], "key_id": "k1"}
    assert batch.replayed_version_id is None and batch.discard_reason is None
    assert repo.get(batch.id) == batch
    assert repo.rows(batch.id).equals(ROWS)
    assert artifacts.exists(batch.digest)
    with store.read() as session:
        dataset = session.get(DatasetRecord, "tx")
        assert dataset is not None and dataset.latest_number == 0
    assert batch.to_dict()["created_at"] == batch.created_at.isoformat()


def test_a_second_batch_reuses_the_data_set_and_listing_is_newest_first(
    repo: QuarantineRepository,
) -> None:
    made = [repo.put("tx" if i % 2 else "users", ROWS, source={"n": i}) for i in range(5)]
    first = repo.list(limit=2)
    assert [b.id for b in first] == [made[4].id, made[3].id]
    assert first.next_cursor is not None
    rest = repo.list(limit=10, cursor=first.next_cursor)
    assert [b.id for b in rest] == [made[2].id, made[1].id, made[0].id]
    assert rest.next_cursor is None
    assert [b.source["n"] for b in repo.list(dataset="tx")] == [3, 1]
    repo.discard(made[1].id, "bad export, re-extracted")
    assert [b.id for b in repo.list(status="discarded")] == [made[1].id]
    assert len(repo.list(dataset="tx", status="pending")) == 1
    assert len(repo.list(dataset="nobody")) == 0


def test_replay_and_discard_change_a_pending_batch_once(
    repo: QuarantineRepository, stores: tuple[MetadataStore, ArtifactStore]
) -> None:
    store, _ = stores
    batch = repo.put("tx", ROWS, source={"kind": "csv"})
    version_id = _version(store, "tx")
    replayed = repo.mark_replayed(batch.id, version_id)
    assert (replayed.status, replayed.replayed_version_id, replayed.version) == (
        "replayed",
        version_id,
        2,
    )
    with pytest.raises(ConflictError, match="already replayed"):
        repo.discard(batch.id, "too late")
    other = repo.put("tx", ROWS, source={"kind": "csv"})
    discarded = repo.discard(other.id, "duplicates of batch 12")
    assert discarded.status == "discarded"
    assert discarded.discard_reason == "duplicates of batch 12"
    assert discarded.source == {"kind": "csv"}
    assert repo.get(other.id).discard_reason == "duplicates of batch 12"
    nothing = repo.put("tx", ROWS, source={})
    assert repo.mark_replayed(nothing.id, None).replayed_version_id is None


def test_replay_needs_a_version_of_the_same_data_set(
    repo: QuarantineRepository, stores: tuple[MetadataStore, ArtifactStore]
) -> None:
    store, _ = stores
    batch = repo.put("tx", ROWS, source={})
    with pytest.raises(NotFoundError, match="no dataset version"):
        repo.mark_replayed(batch.id, "f" * 32)
    with pytest.raises(InvalidInputError, match="belongs to 'users'"):
        repo.mark_replayed(batch.id, _version(store, "users"))
    assert repo.get(batch.id).status == "pending"


def test_a_stale_version_is_a_concurrent_update(repo: QuarantineRepository) -> None:
    batch = repo.put("tx", ROWS, source={})
    mine, theirs = repo.get(batch.id), repo.get(batch.id)
    repo.discard(batch.id, "theirs", expected_version=theirs.version)
    with pytest.raises(ConcurrentUpdateError, match="version 2, not the expected 1"):
        repo.mark_replayed(batch.id, None, expected_version=mine.version)
    after = repo.get(batch.id)
    assert (after.status, after.discard_reason) == ("discarded", "theirs")


def test_racing_writers_one_wins_the_others_are_told(repo: QuarantineRepository) -> None:
    batch = repo.put("tx", ROWS, source={})
    start = threading.Barrier(4)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def contend(k: int) -> None:
        start.wait()
        try:
            result: Any = repo.discard(batch.id, f"writer {k}", expected_version=batch.version)
        except ConcurrentUpdateError as exc:
            result = exc
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=contend, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if isinstance(o, QuarantineBatch)]
    assert len(winners) == 1 and len(outcomes) == 4
    assert all(isinstance(o, ConcurrentUpdateError) for o in outcomes if o not in winners)
    assert repo.get(batch.id).discard_reason == winners[0].discard_reason


def test_a_run_is_linked_when_it_exists(
    repo: QuarantineRepository, stores: tuple[MetadataStore, ArtifactStore]
) -> None:
    store, _ = stores
    run = store.runs.start("pipeline", "ingest-tx")
    assert repo.put("tx", ROWS, source={}, run_id=run.id).run_id == run.id
    with pytest.raises(NotFoundError, match="no run with id"):
        repo.put("tx", ROWS, source={}, run_id="0" * 32)


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        (ROWS.drop_columns([REASON_COLUMN]), "'_quarantine_reason' column"),
        (ROWS.slice(0, 0), "no rows to quarantine"),
        (ROWS.set_column(3, REASON_COLUMN, pa.array(["a", None, " "])), "2 of 3 rows have no"),
        (ROWS.set_column(3, REASON_COLUMN, pa.array([1, 2, 3])), "must hold strings"),
    ],
)
def test_rows_without_reasons_are_refused(
    repo: QuarantineRepository, rows: pa.Table, words: str
) -> None:
    with pytest.raises(InvalidInputError, match=words):
        repo.put("tx", rows, source={})
    assert len(repo.list()) == 0


def test_bad_arguments_are_named(repo: QuarantineRepository) -> None:
    with pytest.raises(InvalidInputError, match="data set name"):
        repo.put("", ROWS, source={})
    with pytest.raises(InvalidInputError, match="source must be a mapping"):
        repo.put("tx", ROWS, source="csv")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"source\.x is nan"):
        repo.put("tx", ROWS, source={"x": float("nan")})
    with pytest.raises(InvalidInputError, match="reserved"):
        repo.put("tx", ROWS, source={"_discard_reason": "x"})
    with pytest.raises(NotFoundError, match="no quarantine batch"):
        repo.get("0" * 32)
    with pytest.raises(InvalidInputError, match="status must be one of"):
        repo.list(status="lost")  # type: ignore[arg-type]
    batch = repo.put("tx", ROWS, source={})
    with pytest.raises(InvalidInputError, match="needs a reason"):
        repo.discard(batch.id, " ")
    with pytest.raises(InvalidInputError, match="expected_version"):
        repo.discard(batch.id, "r", expected_version="1")  # type: ignore[arg-type]


def test_damaged_rows_are_detected_on_read(
    repo: QuarantineRepository, stores: tuple[MetadataStore, ArtifactStore]
) -> None:
    _, artifacts = stores
    batch = repo.put("tx", ROWS, source={})
    key = artifacts.key(batch.digest)
    damaged = bytearray(artifacts.fs.cat_file(key))
    damaged[len(damaged) // 2] ^= 0xFF
    artifacts.fs.pipe_file(key, bytes(damaged))
    with pytest.raises(ArtifactIntegrityError):
        repo.rows(batch.id)


def test_validate_quarantine_and_replay_after_fixing_the_expectation(
    repo: QuarantineRepository,
) -> None:
    batch_in = pa.table({"id": [1, 2, 3, 4], "city": ["Bern", "Genève", "Paris", "Bern"]})
    swiss = [InSet(column="city", values=["Bern", "Genève"]), Between(column="id", min=1)]
    decision = apply_policy(validate(batch_in, swiss, subject="dataset:tx"), "quarantine")
    assert decision.accepted is not None and decision.quarantined is not None
    stored = repo.put("tx", decision.quarantined, source={"kind": "test"})
    waiting = repo.rows(stored.id).drop_columns([REASON_COLUMN])
    european = [InSet(column="city", values=["Bern", "Genève", "Paris"]), swiss[1]]
    again = apply_policy(validate(waiting, european, subject="dataset:tx"), "quarantine")
    assert again.quarantined is None and again.accepted is not None
    assert pa.concat_tables([decision.accepted, again.accepted]).sort_by("id").equals(batch_in)
