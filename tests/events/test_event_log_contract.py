"""The event log contract on every backend: SQLite, PostgreSQL, NATS JetStream, Redis Streams."""

from __future__ import annotations

import pytest

from conveyor.backends import EVENTS
from conveyor.errors import BackendUnavailableError, InvalidInputError
from conveyor.events import EventLog
from conveyor.testing.events import EventLogContract


class TestEventLog(EventLogContract):
    """The contract, once per backend of the matrix's ``events_url``."""


def test_unreachable_postgres_names_host_and_port() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        EVENTS.open("postgresql://postgres@127.0.0.1:1/test")
    assert "127.0.0.1:1" in str(info.value)
    assert info.value.context["port"] == 1


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(InvalidInputError) as info:
        EventLog.from_url("sqlite://")
    assert "file" in str(info.value)


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"flush_interval": 0}, {"max_buffer": 10, "batch_size": 20}],
)
def test_bad_options_are_refused(sqlite_url: str, options: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        EventLog.from_url(sqlite_url, **options)  # type: ignore[arg-type]
