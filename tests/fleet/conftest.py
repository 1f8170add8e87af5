"""The fleet tests' fixture: a running fleet of real server processes behind a real balancer
(:func:`fleet_support.running_fleet`). The types live in ``fleet_support``, a module with a
name of its own: ``from conftest import ...`` would take whichever directory's conftest the
worker imported first."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fleet_support import FleetFactory, RunningFleet, running_fleet


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[FleetFactory]:
    with ExitStack() as stack:
        count = 0

        def make(**options: object) -> RunningFleet:
            nonlocal count
            count += 1
            root = tmp_path / f"fleet{count}"
            return stack.enter_context(running_fleet(root, **options))  # type: ignore[arg-type]

        yield make
