"""How many requests this server is answering: whether a request is alone.

The server's HTTP protocol (:mod:`conveyor.serving.protocol`) hands over uvicorn's
server state when a connection opens; its ``tasks`` are the request tasks, each created
once a request's headers are in, so a burst read in one turn of the event loop counts
whole before any of it runs. The state is kept per thread: a server's event loop, its
protocol and its request handlers share one thread, and two servers in one process
(``ThreadedServer``) each run in their own. The batcher runs a lone request's cheap
model on the event loop (:mod:`conveyor.serving.batcher`).
"""

from __future__ import annotations

import threading

__all__ = ["requests_in_flight", "watch"]

_local = threading.local()


def watch(server_state: object) -> None:
    """Count the requests of this thread's uvicorn server (its ``ServerState``)."""
    _local.state = server_state


def requests_in_flight() -> int | None:
    """Requests read and not answered yet by this thread's server; None when no
    connection came through Conveyor's protocol here (an app under a test client, or
    another server)."""
    state = getattr(_local, "state", None)
    return None if state is None else len(state.tasks)
