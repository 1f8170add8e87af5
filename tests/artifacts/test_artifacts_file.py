from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.artifacts import ArtifactStore
from conveyor.backends import ARTIFACTS
from conveyor.errors import InvalidInputError
from conveyor.testing.artifacts import ArtifactStoreContract


class TestFileArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def artifacts_url(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/artifacts"


def test_folder_is_created_and_layout_is_content_addressed(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "artifacts"
    with ARTIFACTS.open(f"file://{root}") as store:
        assert root.is_dir()
        ref = store.put(b"abc")
    hex_digest = ref.digest.removeprefix("sha256:")
    assert (root / "sha256" / hex_digest[:2] / hex_digest[2:]).read_bytes() == b"abc"
    assert not any((root / "tmp").iterdir())


def test_unknown_query_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="endpoint_url"):
        ArtifactStore.from_url(f"file://{tmp_path}?endpoint_url=x")


def test_put_of_missing_path_names_it(tmp_path: Path) -> None:
    with (
        ARTIFACTS.open(f"file://{tmp_path}/a") as store,
        pytest.raises(InvalidInputError, match="no such file"),
    ):
        store.put(tmp_path / "absent.bin")
