"""The events package: what it exposes and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import conveyor.events


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_all_matches_what_the_package_exposes() -> None:
    assert sorted(conveyor.events.__all__) == ["Event", "EventLog", "new_event_id"]
    for name in conveyor.events.__all__:
        assert getattr(conveyor.events, name) is not None


def test_building_events_does_not_import_sqlalchemy_or_start_threads() -> None:
    loaded = _modules_after(
        "import threading\n"
        "from conveyor.events import Event\n"
        "Event('prediction', payload={'x': 1})\n"
        "assert threading.active_count() == 1"
    )
    assert "conveyor.events.schema" in loaded
    assert "sqlalchemy" not in loaded


def test_the_log_is_imported_on_first_use() -> None:
    loaded = _modules_after("from conveyor.events import EventLog")
    assert "sqlalchemy" in loaded
    assert "conveyor.events.log" in loaded
