from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from conveyor.artifacts.store import ArtifactStore
from conveyor.data.crypto import Keyring, generate_key, mask_table
from conveyor.data.versions import DatasetRepository, content_hash
from conveyor.errors import IntegrityError, InvalidInputError, NotFoundError
from conveyor.events.log import EventLog
from conveyor.store.database import MetadataStore

SECRET = "subject-7f3a9c@example.com"


@pytest.fixture
def repo(store_url: str, tmp_path: Path) -> Iterator[DatasetRepository]:
    with (
        MetadataStore.from_url(store_url) as store,
        ArtifactStore.from_url(f"file://{tmp_path}/artifacts") as artifacts,
        EventLog.from_url(f"sqlite:///{tmp_path}/events.db") as events,
    ):
        keyring = Keyring.parse(generate_key(), "test key")
        yield DatasetRepository(store, artifacts, events=events, keyring=keyring)


def _batch(start: int, n: int) -> pa.Table:
    return pa.table(
        {
            "id": list(range(start, start + n)),
            "email": [
                SECRET if i == start else f"user{i}@example.com" for i in range(start, start + n)
            ],
            "amount": [float(i) * 1.5 for i in range(start, start + n)],
        }
    )


def test_versions_are_numbered_found_and_read_back(repo: DatasetRepository) -> None:
    v1 = repo.commit("tx", _batch(0, 10), source={"kind": "test"})
    v2 = repo.commit("tx", _batch(10, 5))
    assert (v1.number, v2.number) == (1, 2)
    assert v2.row_count == 5 and v2.ref == "tx@2"
    assert repo.get("tx").id == v2.id
    assert repo.resolve("tx@1").id == v1.id
    assert repo.resolve(v1.id).id == v1.id
    assert repo.read("tx@1").equals(_batch(0, 10))
    assert repo.read(v2, kind="pandas")["id"].tolist() == list(range(10, 15))
    assert [v.number for v in repo.list("tx").items] == [2, 1]
    assert repo.accepted_schema("tx") == v2.schema
    with pytest.raises(NotFoundError, match="tx@9"):
        repo.get("tx", 9)
    with pytest.raises(NotFoundError, match="no version yet"):
        repo.get("other")
    with pytest.raises(InvalidInputError):
        repo.resolve("tx@two")


def test_append_reuses_parts_and_checks_the_schema(repo: DatasetRepository) -> None:
    v1 = repo.commit("tx", _batch(0, 10))
    v2 = repo.commit("tx", _batch(10, 5), mode="append")
    assert v2.row_count == 15
    assert repo.parts(v2)[0] == repo.parts(v1)[0]  # the first part is shared, not copied
    assert repo.read(v2).equals(pa.concat_tables([_batch(0, 10), _batch(10, 5)]))
    with pytest.raises(InvalidInputError, match="cannot append"):
        repo.commit("tx", pa.table({"id": [1]}), mode="append")


def test_content_hash_ignores_chunking_and_metadata() -> None:
    table = _batch(0, 100)
    rechunked = pa.concat_tables([table.slice(0, 30), table.slice(30)])
    assert content_hash(table) == content_hash(rechunked.replace_schema_metadata({"a": "b"}))
    assert content_hash(table) != content_hash(_batch(1, 100))


def test_sensitive_columns_never_reach_storage_in_clear(
    repo: DatasetRepository, tmp_path: Path
) -> None:
    version = repo.commit("people", _batch(0, 50), sensitive=["email"])
    assert version.encryption == {"columns": ["email"], "key_ids": [repo.keyring.current]}
    stored = b"".join(p.read_bytes() for p in (tmp_path / "artifacts").rglob("*") if p.is_file())
    assert SECRET.encode() not in stored
    assert b"user7@example.com" not in stored
    assert repo.read(version).equals(_batch(0, 50))
    other = DatasetRepository(
        repo.store, repo.artifacts, keyring=Keyring.parse(generate_key(), "k")
    )
    with pytest.raises(NotFoundError, match="not in the keyring"):
        other.read(version)
    no_key = DatasetRepository(repo.store, repo.artifacts)
    with pytest.raises(InvalidInputError, match="CONVEYOR_DATA_KEY"):
        no_key.read(version)
    with pytest.raises(InvalidInputError, match="CONVEYOR_DATA_KEY"):
        no_key.commit("people", _batch(0, 2), sensitive=["email"])


def test_an_encrypted_blob_moved_to_another_part_is_refused(repo: DatasetRepository) -> None:
    a = repo.parts(repo.commit("people", _batch(0, 5), sensitive=["email"]))[0]
    b = repo.parts(repo.commit("people", _batch(100, 5), sensitive=["email"]))[0]
    assert repo.read_part(a).equals(_batch(0, 5))
    # Same columns, same row count: only the binding to a's content tells them apart.
    forged = type(a)(a.digest, a.rows, a.content_hash, b.secret_digest, b.encryption)
    with pytest.raises(IntegrityError, match="failed authentication"):
        repo.read_part(forged)


def test_every_read_is_an_audit_event(repo: DatasetRepository) -> None:
    version = repo.commit("tx", _batch(0, 3))
    repo.read(version, actor="alice", purpose="training")
    assert repo.events is not None
    (event,) = repo.events.query(kind="data.read").items
    assert event.actor == "alice" and event.subject == "tx" and event.subject_version == "1"
    assert event.payload["rows"] == 3 and event.payload["purpose"] == "training"
    assert repo.events.count(kind="data.version_created") == 1


def test_concurrent_commits_get_distinct_numbers(repo: DatasetRepository) -> None:
    errors: list[BaseException] = []

    def commit(i: int) -> None:
        try:
            repo.commit("race", _batch(i * 10, 3))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(v.number for v in repo.list("race").items) == [1, 2, 3, 4, 5, 6]


def test_lineage_row_for_a_run(repo: DatasetRepository) -> None:
    import sqlalchemy as sa

    from conveyor.data.tables import LineageRecord

    run = repo.store.runs.start("pipeline", "ingest")
    version = repo.commit("tx", _batch(0, 3), run_id=run.id)
    with repo.store.read() as session:
        rows = session.scalars(sa.select(LineageRecord)).all()
        assert [(r.run_id, r.dataset_version_id, r.role) for r in rows] == [
            (run.id, version.id, "output")
        ]


def test_mask_table_hides_values_keeps_nulls() -> None:
    table = pa.table({"email": ["a@x", None], "n": [1, 2]})
    masked = mask_table(table, ["email", "absent"])
    assert masked.column("email").to_pylist() == ["***", None]
    assert masked.column("n").to_pylist() == [1, 2]


def test_key_rotation_reseals_every_part_and_keeps_the_data(repo: DatasetRepository) -> None:
    import json

    from conveyor.data.keys import rotate

    old = repo.keyring
    assert old is not None
    v1 = repo.commit("people", _batch(0, 5), sensitive=["email"])
    v2 = repo.commit("people", _batch(5, 5), sensitive=["email"], mode="append")
    new_key = generate_key()
    ring_text = json.dumps(
        {
            "current": "new",
            "keys": {
                "new": new_key,
                old.current: __import__("base64").b64encode(old.keys[old.current]).decode(),
            },
        }
    )
    repo.keyring = Keyring.parse(ring_text, "rotated ring")
    result = rotate(repo)
    assert (result.key_id, result.versions, result.parts) == ("new", 2, 2)
    only_new = DatasetRepository(
        repo.store,
        repo.artifacts,
        keyring=Keyring.parse(json.dumps({"current": "new", "keys": {"new": new_key}}), "new"),
    )
    # The old key can go: everything reads with the new key alone.
    for version, expected in (
        (v1, _batch(0, 5)),
        (v2, pa.concat_tables([_batch(0, 5), _batch(5, 5)])),
    ):
        again = only_new.by_id(version.id)
        assert again.encryption is not None
        assert only_new.read(again).equals(expected)
        assert again.content_hash == version.content_hash and again.rewritten_at is not None
