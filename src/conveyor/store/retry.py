"""One way to retry a write that lost a race: :func:`retry_on_conflict`.

::

    from conveyor.store.retry import retry_on_conflict

    version = retry_on_conflict(lambda: self._commit_once(...), what=f"committing {name}")

Optimistic concurrency makes a write that was based on a stale read fail
(``ConcurrentUpdateError``), and two writers creating the same row fail one
of them (``AlreadyExistsError``). When the caller did not ask for a
conditional write, the right answer is to read again and write again: the
function given here is called afresh each time, so it must open its own
transaction and read the current state inside it.

The waits are exponential with full jitter (a uniform draw between 0 and
``min(max_delay, base_delay * 2**n)``), so writers that collided once do not
collide again in lockstep, which retrying at once (as each repository used
to, with its own attempt count) invites. When every attempt lost, the last
error is raised, its message saying how many attempts were made.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from conveyor.errors import (
    AlreadyExistsError,
    ConcurrentUpdateError,
    ConveyorError,
    InvalidInputError,
)

__all__ = ["CONFLICTS", "DEFAULT_ATTEMPTS", "backoff_delay", "retry_on_conflict"]

log = logging.getLogger("conveyor.store.retry")

T = TypeVar("T")

#: What "someone else wrote first" looks like in the store.
CONFLICTS: tuple[type[BaseException], ...] = (ConcurrentUpdateError, AlreadyExistsError)
#: Enough for a handful of writers racing on one row: each round of a race has a winner,
#: and the jittered waits spread the losers out.
DEFAULT_ATTEMPTS = 8

_RNG = random.Random()


def backoff_delay(
    retry: int, *, base_delay: float, max_delay: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``retry`` (0 for the first): full jitter."""
    ceiling = min(max_delay, base_delay * (2**retry))
    return (rng or _RNG).uniform(0.0, ceiling)


def retry_on_conflict(
    fn: Callable[[], T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    base_delay: float = 0.002,
    max_delay: float = 0.2,
    retry_on: tuple[type[BaseException], ...] = CONFLICTS,
    what: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """``fn()``, called again after a jittered wait each time it raises one of ``retry_on``.

    Any other error propagates at once. After ``attempts`` calls that all
    lost, the last error is re-raised (same type, same context) with
    ``" (<what>: gave up after N attempts ...)"`` added to its message and
    ``attempts`` to its context. ``sleep`` and ``rng`` are the clock and the
    dice (inject them to make tests fast and reproducible).
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InvalidInputError(
            f"attempts must be an integer >= 1, got {attempts!r}", field="attempts"
        )
    for name, value in (("base_delay", base_delay), ("max_delay", max_delay)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise InvalidInputError(f"{name} must be seconds >= 0, got {value!r}", field=name)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except retry_on as exc:
            if attempt == attempts:
                _gave_up(exc, attempts, what)
                raise
            delay = backoff_delay(attempt - 1, base_delay=base_delay, max_delay=max_delay, rng=rng)
            log.debug(
                "%s lost a race (attempt %d of %d, %s); retrying in %.4f s",
                what or "a write",
                attempt,
                attempts,
                exc,
                delay,
            )
            if delay > 0:
                sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover: the loop returns or raises


def _gave_up(exc: BaseException, attempts: int, what: str | None) -> None:
    """Say in the error itself that it is the last of ``attempts``, keeping its type."""
    where = f"{what}: " if what else ""
    many = attempts != 1
    note = (
        f"{where}gave up after {attempts} attempt{'s' if many else ''}, "
        f"{'each ' if many else ''}lost to a concurrent writer"
    )
    if isinstance(exc, ConveyorError):
        exc.message = f"{exc.message} ({note})"
        exc.args = (exc.message,)
        exc.context["attempts"] = attempts
    else:
        # A foreign exception's args may mean something to its class: leave them be.
        exc.add_note(note)
