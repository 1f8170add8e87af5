"""One Project: backends and capabilities' services built once, kept, closed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.capability import Capability, register, unregister
from conveyor.errors import ClosedError, InvalidInputError
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.registry import Registry


class Closing:
    """A service that records its close (an instance per project)."""

    closed: list[str] = []

    def __init__(self, project: Project) -> None:
        self.name = project.name

    @classmethod
    def for_project(cls, project: Project) -> Closing:
        return cls(project)

    def close(self) -> None:
        Closing.closed.append(self.name)


def test_services_are_built_once_and_closed_with_the_project(tmp_path: Path) -> None:
    init_project(tmp_path, name="one")
    register(Capability("closing_test", services={"closing": f"{__name__}:Closing.for_project"}))
    try:
        with Project.open(tmp_path, env={}) as project:
            registry = project.registry
            assert project.registry is registry  # cached, not rebuilt on each access
            assert isinstance(registry, Registry)
            assert project.service("registry", Registry) is registry
            assert isinstance(project.keys, ApiKeys)
            assert project.data is project.data
            assert project.closing is project.closing
            with pytest.raises(InvalidInputError, match="is a Registry, not a ApiKeys"):
                project.service("registry", ApiKeys)
            with pytest.raises(AttributeError, match="no capability provides a service named"):
                _ = project.no_such_service
        assert Closing.closed == ["one"]  # closed once, with the project
        project.close()  # idempotent
        assert Closing.closed == ["one"]
        with pytest.raises(ClosedError):
            _ = project.registry
    finally:
        unregister("closing_test")


def test_options_after_a_backend_opened_are_an_error_not_ignored(tmp_path: Path) -> None:
    init_project(tmp_path, name="opts")
    with Project.open(tmp_path, env={}) as project:
        events = project.events
        assert project.backend("events") is events  # no options: the open one
        with pytest.raises(InvalidInputError, match="already open with options"):
            project.backend("events", batch_size=7)
        with pytest.raises(InvalidInputError, match="unknown seam 'nope'"):
            project.backend("nope")
        # The spec's options for the event log were used when it opened.
        assert events.health()["spill_dir"] == str(tmp_path / ".conveyor/spill/events")
