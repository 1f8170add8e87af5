"""Group commit for an event loop: a response waits for its event's commit, many share one.

::

    commits = GroupCommit(events, timeout_s=5)
    events.record(PREDICTION, ...)          # queued (telemetry never blocks)
    await commits.committed()               # returns once it is in the log

Every caller that asks during one turn of the event loop gets the same
future; at the end of the turn one barrier goes into the writer behind all
their events, and the writer thread settles the future after the batch that
holds them commits (:meth:`conveyor.events.log.EventLog.on_committed`). So
64 concurrent requests cost one commit, not 64, and the loop never blocks:
the waiting is a future, the commit a thread.

A failed commit settles the future with the writer's error (the events are
kept and retried; the caller answers 503); one that takes longer than
``timeout_s`` with a BackendUnavailableError.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from conveyor.errors import BackendUnavailableError

if TYPE_CHECKING:
    from conveyor.events.log import EventLog

__all__ = ["GroupCommit"]


class GroupCommit:
    """Futures that resolve when the events recorded before them are committed."""

    def __init__(self, events: EventLog, *, timeout_s: float = 5.0) -> None:
        self.events = events
        self.timeout_s = timeout_s
        self._next: asyncio.Future[None] | None = None
        #: How many commits were awaited, and by how many callers in all (a group's size
        #: is their ratio).
        self.groups = 0
        self.waiters = 0

    def committed(self) -> asyncio.Future[None]:
        """A future settled once every event recorded so far (by anyone) is committed."""
        self.waiters += 1
        found = self._next
        if found is None:
            loop = asyncio.get_running_loop()
            found = self._next = loop.create_future()
            loop.call_soon(self._arm, loop, found)
        return found

    def stats(self) -> dict[str, int]:
        """``acknowledged_waits`` (answers that waited for a commit) and
        ``acknowledged_groups`` (commits they waited for): their ratio is the group size,
        how many answers one commit carried."""
        return {"acknowledged_groups": self.groups, "acknowledged_waits": self.waiters}

    def _arm(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        # The end of the turn: whoever asks from now on waits for the next barrier.
        self._next = None
        self.groups += 1

        def settle(error: BaseException | None) -> None:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(_unavailable(error))

        timer = loop.call_later(
            self.timeout_s,
            settle,
            TimeoutError(f"the event log did not commit within {self.timeout_s} s"),
        )
        future.add_done_callback(lambda _: timer.cancel())

        def committed(error: BaseException | None) -> None:  # on the writer's thread
            loop.call_soon_threadsafe(settle, error)

        try:
            self.events.on_committed(committed)
        except Exception as exc:  # closed log
            settle(exc)


def _unavailable(error: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(
        "the prediction was computed but its event could not be committed "
        f"(events.durability: acknowledged): {error}; it is kept and retried",
        reason="event_not_committed",
    )
