"""The events package: what it exposes and what importing it costs."""

from __future__ import annotations

import conveyor.events
from fresh_python import modules_after


def test_all_matches_what_the_package_exposes() -> None:
    assert sorted(conveyor.events.__all__) == ["Event", "EventLog", "new_event_id"]
    for name in conveyor.events.__all__:
        assert getattr(conveyor.events, name) is not None


def test_building_events_does_not_import_sqlalchemy_or_start_threads() -> None:
    loaded = modules_after(
        "import threading\n"
        "from conveyor.events import Event\n"
        "Event('prediction', payload={'x': 1})\n"
        "assert threading.active_count() == 1"
    )
    assert "conveyor.events.schema" in loaded
    assert "sqlalchemy" not in loaded


def test_the_log_is_imported_on_first_use_and_a_backend_when_opened() -> None:
    loaded = modules_after("from conveyor.events import EventLog")
    assert "conveyor.events.log" in loaded
    # The interface needs no database driver; the SQL backend is loaded by its scheme.
    assert "sqlalchemy" not in loaded and "conveyor.events.sql" not in loaded
    opened = modules_after(
        "import tempfile\n"
        "from conveyor.events import EventLog\n"
        "EventLog.from_url(f'sqlite:///{tempfile.mkdtemp()}/e.db').close()"
    )
    assert {"sqlalchemy", "conveyor.events.sql"} <= opened
