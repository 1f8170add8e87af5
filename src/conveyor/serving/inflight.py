"""How many requests this process's server is answering: whether a request is alone.

The server's HTTP protocol (:mod:`conveyor.serving.protocol`) hands over uvicorn's
server state when a connection opens; its ``tasks`` are the request tasks, each created
once a request's headers are in, so a burst read in one turn of the event loop counts
whole before any of it runs. The batcher runs a lone request's cheap model on the event
loop (:mod:`conveyor.serving.batcher`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["requests_in_flight", "watch"]

_state: Any = None


def watch(server_state: Any) -> None:
    """Count the requests of this uvicorn server (its ``ServerState``)."""
    global _state
    _state = server_state


def requests_in_flight() -> int | None:
    """Requests read and not answered yet; None when no connection came through
    Conveyor's protocol (an app under a test client, or another server)."""
    state = _state
    return None if state is None else len(state.tasks)
