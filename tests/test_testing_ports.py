"""conveyor.testing.ports: each xdist worker draws server ports from its own band, and a
port something holds is never handed out."""

from __future__ import annotations

import itertools
import socket

import pytest

from conveyor.testing.ports import worker_port


def test_two_workers_draw_from_disjoint_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        seen[worker] = {worker_port() for _ in range(50)}
    assert not seen["gw0"] & seen["gw1"]
    assert all(12_000 <= p < 32_000 for p in seen["gw0"] | seen["gw1"])
    assert max(seen["gw0"]) < min(seen["gw1"])


def test_a_held_port_is_passed_over() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        # The held port twice, then the ports above it: the next one may be held by another
        # process on a busy machine (CI once found taken + 1 in use), so the draw goes on.
        draws = itertools.chain([taken, taken], itertools.count(taken + 1))
        drawn: list[int] = []

        def draw(low: int, high: int) -> int:
            drawn.append(next(draws))
            return drawn[-1]

        port = worker_port(draw=draw)
        assert port > taken
        assert drawn[:2] == [taken, taken] and drawn[-1] == port


def test_a_worker_whose_band_is_full_is_told() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        with pytest.raises(RuntimeError, match="no free port"):
            worker_port(draw=lambda low, high: taken)
