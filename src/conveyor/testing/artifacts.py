"""The contract every artifact store backend honours.

Subclass :class:`ArtifactStoreContract` and provide the fixture
``artifacts_url`` (and, if the backend needs credentials or the like,
``artifacts_options``: keyword options for ``ARTIFACTS.open``)::

    class TestLocal(ArtifactStoreContract):
        @pytest.fixture
        def artifacts_url(self, tmp_path):
            return f"file://{tmp_path}/artifacts"

Each test damages objects through the store's own filesystem
(``store.fs``), as a disk fault or an attacker would, and checks that no
read path hands back the damaged bytes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.artifacts import CHUNK_SIZE, ArtifactRef, ArtifactStore
from conveyor.backends import ARTIFACTS
from conveyor.errors import (
    ArtifactIntegrityError,
    ClosedError,
    InvalidInputError,
    NotFoundError,
)

__all__ = ["ArtifactStoreContract", "flip_byte", "stored_files", "truncate"]

_ABSENT = "sha256:" + "0" * 64


def stored_files(store: ArtifactStore) -> list[str]:
    """Every file under the store's root (objects and any temporary leftovers)."""
    return sorted(str(p) for p in store.fs.find(store.root))


def flip_byte(store: ArtifactStore, digest: str, index: int = 0) -> None:
    """Change one byte of the stored object, bypassing the store."""
    key = store.key(digest)
    data = bytearray(store.fs.cat_file(key))
    data[index] ^= 0xFF
    store.fs.pipe_file(key, bytes(data))


def truncate(store: ArtifactStore, digest: str, keep: int) -> None:
    """Cut the stored object down to its first ``keep`` bytes."""
    key = store.key(digest)
    store.fs.pipe_file(key, bytes(store.fs.cat_file(key))[:keep])


class ArtifactStoreContract:
    """Behaviour shared by ``file://``, ``memory://``, ``s3://`` and any new backend."""

    @pytest.fixture
    def artifacts_options(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def store(self, artifacts_url: str, artifacts_options: dict[str, Any]) -> Iterator[Any]:
        with ARTIFACTS.open(artifacts_url, **artifacts_options) as store:
            assert isinstance(store, ArtifactStore)
            yield store

    # -- round trips ----------------------------------------------------------

    @pytest.mark.parametrize("data", [b"", b"hello, conveyor", bytes(range(256)) * 3])
    def test_put_get_round_trip(self, store: ArtifactStore, data: bytes) -> None:
        ref = store.put(data, media_type="application/octet-stream")
        assert ref == ArtifactRef(
            "sha256:" + hashlib.sha256(data).hexdigest(), len(data), "application/octet-stream"
        )
        assert store.get(ref.digest) == data
        assert store.exists(ref.digest)
        assert store.size(ref.digest) == len(data)
        assert store.verify(ref.digest)
        with store.open(ref.digest) as reader:
            assert reader.read() == data
            assert reader.verified

    def test_large_file_round_trip(self, store: ArtifactStore, tmp_path: Path) -> None:
        # 5 MiB plus a ragged tail: several chunks, the last one partial.
        data = os.urandom(5 * CHUNK_SIZE + 12345)
        source = tmp_path / "model.bin"
        source.write_bytes(data)
        ref = store.put(source)
        assert ref.size == len(data)
        assert ref.digest == "sha256:" + hashlib.sha256(data).hexdigest()
        target = store.download(ref.digest, tmp_path / "out" / "model.bin")
        assert target == tmp_path / "out" / "model.bin"
        assert target.read_bytes() == data
        assert sorted(p.name for p in target.parent.iterdir()) == ["model.bin"]
        with store.open(ref.digest) as reader:
            assert reader.read(CHUNK_SIZE) == data[:CHUNK_SIZE]
            assert reader.read() == data[CHUNK_SIZE:]

    def test_put_from_stream(self, store: ArtifactStore, tmp_path: Path) -> None:
        data = os.urandom(CHUNK_SIZE + 7)
        source = tmp_path / "blob"
        source.write_bytes(data)
        with source.open("rb") as f:
            ref = store.put(f)
        assert store.get(ref.digest) == data

    def test_json_round_trip(self, store: ArtifactStore) -> None:
        ref = store.put_json({"b": [1, 2.5, None], "a": "x"})
        assert ref.media_type == "application/json"
        assert store.get_json(ref.digest) == {"a": "x", "b": [1, 2.5, None]}
        # Key order does not change the address.
        assert store.put_json({"a": "x", "b": [1, 2.5, None]}).digest == ref.digest

    @settings(
        max_examples=30,
        deadline=None,
        # The store fixture is reused across examples on purpose (content addressing
        # makes that safe), and the method runs once per backend subclass by design.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(data=st.binary(max_size=4096))
    def test_round_trip_property(self, store: ArtifactStore, data: bytes) -> None:
        ref = store.put(data)
        assert ref.size == len(data)
        assert store.get(ref.digest) == data

    # -- deduplication --------------------------------------------------------

    def test_identical_bytes_are_stored_once(self, store: ArtifactStore) -> None:
        first = store.put(b"same bytes")
        before = stored_files(store)
        second = store.put(b"same bytes")
        assert first == second
        assert stored_files(store) == before == [store.key(first.digest)]
        assert list(store.iter_digests()) == [first.digest]

    def test_identical_stream_is_stored_once(self, store: ArtifactStore, tmp_path: Path) -> None:
        source = tmp_path / "blob"
        source.write_bytes(b"x" * 1000)
        first = store.put(source)
        with source.open("rb") as f:
            second = store.put(f)
        assert first.digest == second.digest
        # The streamed copy went to a temporary key; nothing of it is left.
        assert stored_files(store) == [store.key(first.digest)]

    def test_damaged_object_is_replaced_by_put(self, store: ArtifactStore) -> None:
        ref = store.put(b"0123456789")
        truncate(store, ref.digest, keep=4)
        with pytest.raises(ArtifactIntegrityError):
            store.get(ref.digest)
        assert store.put(b"0123456789") == ref
        assert store.get(ref.digest) == b"0123456789"

    def test_concurrent_puts_of_same_bytes(self, store: ArtifactStore) -> None:
        data = os.urandom(CHUNK_SIZE * 2 + 1)
        barrier = threading.Barrier(4)
        refs: list[ArtifactRef] = []
        errors: list[BaseException] = []

        def put() -> None:
            try:
                barrier.wait()
                refs.append(store.put(bytes(data)))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=put) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(refs) == 4
        assert len(set(refs)) == 1
        assert stored_files(store) == [store.key(refs[0].digest)]
        assert store.get(refs[0].digest) == data

    # -- damage ---------------------------------------------------------------

    def test_tampered_object_refused_by_get(self, store: ArtifactStore) -> None:
        ref = store.put(b"weights v1")
        flip_byte(store, ref.digest, 3)
        with pytest.raises(ArtifactIntegrityError) as info:
            store.get(ref.digest)
        message = str(info.value)
        assert ref.digest in message
        assert "altered or damaged" in message
        actual = (
            "sha256:" + hashlib.sha256(bytes(store.fs.cat_file(store.key(ref.digest)))).hexdigest()
        )
        assert actual in message
        assert info.value.context["expected"] == ref.digest
        assert info.value.context["actual"] == actual
        assert not store.verify(ref.digest)

    def test_tampered_object_refused_by_open(self, store: ArtifactStore) -> None:
        data = os.urandom(CHUNK_SIZE + 100)
        ref = store.put(data)
        flip_byte(store, ref.digest, len(data) - 1)
        with store.open(ref.digest) as reader:
            first = reader.read(4096)
            assert len(first) == 4096  # unverified so far: no verdict before the end
            with pytest.raises(ArtifactIntegrityError):
                reader.read()
        # Reading exactly `size` bytes (never seeing b"") still gets the verdict.
        with store.open(ref.digest) as reader, pytest.raises(ArtifactIntegrityError):
            reader.read(len(data))

    def test_tampered_object_never_lands_at_download_path(
        self, store: ArtifactStore, tmp_path: Path
    ) -> None:
        data = os.urandom(CHUNK_SIZE * 2)
        ref = store.put(data)
        flip_byte(store, ref.digest, CHUNK_SIZE)
        target = tmp_path / "dl" / "model.bin"
        with pytest.raises(ArtifactIntegrityError):
            store.download(ref.digest, target)
        assert not target.exists()
        assert list(target.parent.iterdir()) == []  # no temporary file left either

    def test_download_keeps_previous_file_when_verification_fails(
        self, store: ArtifactStore, tmp_path: Path
    ) -> None:
        good = store.put(b"good model")
        bad = store.put(b"bad model!")
        target = store.download(good.digest, tmp_path / "model.bin")
        flip_byte(store, bad.digest)
        with pytest.raises(ArtifactIntegrityError):
            store.download(bad.digest, target)
        assert target.read_bytes() == b"good model"

    def test_truncated_object_refused(self, store: ArtifactStore, tmp_path: Path) -> None:
        data = os.urandom(CHUNK_SIZE + 10)
        ref = store.put(data)
        truncate(store, ref.digest, keep=CHUNK_SIZE)
        with pytest.raises(ArtifactIntegrityError, match="altered or damaged"):
            store.get(ref.digest)
        with store.open(ref.digest) as reader, pytest.raises(ArtifactIntegrityError):
            reader.read()
        with pytest.raises(ArtifactIntegrityError):
            store.download(ref.digest, tmp_path / "out.bin")
        assert not (tmp_path / "out.bin").exists()
        assert not store.verify(ref.digest)

    # -- absence and bad input ------------------------------------------------

    def test_missing_artifact(self, store: ArtifactStore, tmp_path: Path) -> None:
        assert not store.exists(_ABSENT)
        for call in (
            lambda: store.get(_ABSENT),
            lambda: store.open(_ABSENT),
            lambda: store.size(_ABSENT),
            lambda: store.verify(_ABSENT),
            lambda: store.download(_ABSENT, tmp_path / "x"),
        ):
            with pytest.raises(NotFoundError, match=_ABSENT):
                call()
        assert not (tmp_path / "x").exists()
        assert store.delete(_ABSENT) is False

    @pytest.mark.parametrize(
        "digest",
        [
            "",
            "sha256:",
            "0" * 64,
            "md5:" + "0" * 32,
            "sha256:" + "0" * 63,
            "sha256:" + "A" * 64,
            "sha256:" + "g" * 64,
            "sha256:../../" + "0" * 58,
        ],
    )
    def test_malformed_digest(self, store: ArtifactStore, digest: str) -> None:
        for call in (store.get, store.open, store.exists, store.size, store.delete):
            with pytest.raises(InvalidInputError, match="not an artifact digest"):
                call(digest)

    def test_put_rejects_text(self, store: ArtifactStore) -> None:
        with pytest.raises(InvalidInputError, match="bytes"):
            store.put("not bytes")  # type: ignore[arg-type]

    # -- listing and deletion -------------------------------------------------

    def test_iter_and_delete(self, store: ArtifactStore) -> None:
        refs = {store.put(f"artifact {i}".encode()).digest for i in range(5)}
        assert set(store.iter_digests()) == refs
        victim = sorted(refs)[0]
        assert store.delete(victim) is True
        assert store.delete(victim) is False
        assert not store.exists(victim)
        with pytest.raises(NotFoundError):
            store.get(victim)
        assert set(store.iter_digests()) == refs - {victim}

    def test_reopened_store_sees_artifacts(
        self, store: ArtifactStore, artifacts_url: str, artifacts_options: dict[str, Any]
    ) -> None:
        ref = store.put(b"persisted")
        with ARTIFACTS.open(artifacts_url, **artifacts_options) as again:
            assert again.get(ref.digest) == b"persisted"

    def test_closed_store_refuses_use(
        self, artifacts_url: str, artifacts_options: dict[str, Any]
    ) -> None:
        store = ARTIFACTS.open(artifacts_url, **artifacts_options)
        store.close()
        store.close()  # idempotent
        with pytest.raises(ClosedError):
            store.put(b"x")
