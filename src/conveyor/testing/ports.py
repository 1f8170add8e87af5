"""Ports for servers a test starts in another process, never shared between test workers.

``free_port()`` (bind port 0, read it, close) hands out a port nothing holds *now*; a
server spawned with it binds it seconds later, after its start-up. Under ``pytest -n 2``
the other worker may be handed the same port meanwhile (the kernel draws ports for bind(0)
from the ephemeral range, where two draws can meet): one server then fails to bind while
the other answers the first one's readiness probe, and the test goes on with a server
that is not its own. :func:`worker_port` draws instead from a band below the ephemeral
range that belongs to this xdist worker alone (``PYTEST_XDIST_WORKER``: ``gw0`` takes the
first band, ``gw1`` the next), and checks that nothing holds the port it returns. A server
in the test's own process (:class:`~conveyor.serving.server.ThreadedServer`) needs neither:
it keeps the socket it found its port with.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable

__all__ = ["worker_port"]

#: Below Linux's default ephemeral range (32768-60999), above the well-known services'.
_LOW, _HIGH = 12_000, 32_000
_BANDS = 8


def _band() -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    number = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    width = (_HIGH - _LOW) // _BANDS
    start = _LOW + (number % _BANDS) * width
    return start, start + width


def worker_port(host: str = "127.0.0.1", *, draw: Callable[[int, int], int] | None = None) -> int:
    """A port in this test worker's band that nothing listens on or holds right now.

    ``draw(low, high)`` picks a candidate in ``[low, high)`` (default: at random)."""
    low, high = _band()
    pick = draw or random.Random().randrange  # not a secret: only a spread over the band
    for _ in range(200):
        port = pick(low, high)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high} for this test worker")
