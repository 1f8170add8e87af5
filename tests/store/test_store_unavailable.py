"""An unreachable database is a clear BackendUnavailableError, not a hang or a driver error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conveyor.backends import STORE, BackendURL
from conveyor.errors import BackendUnavailableError
from conveyor.store.database import MetadataStore


def test_closed_postgres_port_names_host_port_and_doctor() -> None:
    url = "postgresql://app:s3cret-pw@127.0.0.1:1/conveyor"
    with pytest.raises(BackendUnavailableError) as info:
        MetadataStore.from_url(BackendURL.parse(url))
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "conveyor doctor" in message
    assert "s3cret-pw" not in message
    assert info.value.context["port"] == 1
    assert info.value.code == "backend_unavailable"
    with pytest.raises(BackendUnavailableError, match=re.escape("127.0.0.1:1")):
        STORE.open(url, migrate=False)


def test_sqlite_path_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    folder = tmp_path / "a-directory.db"
    folder.mkdir()
    with pytest.raises(BackendUnavailableError, match=re.escape("a-directory.db")):
        MetadataStore.from_url(f"sqlite:///{folder}")


def test_password_never_shown(pg_url: str) -> None:
    # The test server trusts local connections, so any password is accepted.
    url = BackendURL.parse(pg_url).with_(password="hunter2-secret")
    with MetadataStore.from_url(url) as store:
        assert "hunter2-secret" not in repr(store)
        assert "hunter2-secret" not in str(store.health())
        assert "***" in store.health()["url"]
    assert "hunter2-secret" not in repr(store)
