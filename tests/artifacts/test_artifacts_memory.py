from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from conveyor.backends import ARTIFACTS
from conveyor.testing.artifacts import ArtifactStoreContract


def _drop(name: str) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    fs = MemoryFileSystem(skip_instance_cache=True)
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


class TestMemoryArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def artifacts_url(self) -> Iterator[str]:
        # fsspec's memory filesystem is one per process: a unique name per test.
        name = f"test-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        _drop(name)


def test_memory_stores_are_namespaced_by_name() -> None:
    a, b = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    try:
        with ARTIFACTS.open(f"memory://{a}") as first, ARTIFACTS.open(f"memory://{b}") as other:
            ref = first.put(b"only in a")
            assert first.exists(ref.digest)
            assert not other.exists(ref.digest)
            assert list(other.iter_digests()) == []
    finally:
        _drop(a)
        _drop(b)
