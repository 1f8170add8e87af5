"""Wait for something to happen, never for a fixed time: the one polling helper of the tests.

A test that needs a route to reach a worker, a file to appear or an event to
be written asks for exactly that::

    wait_until(lambda: path.exists(), message="the child to write its marker")
    state = wait_until(lambda: routes.get("fraud"), timeout=5, message="the route")
    await wait_until_async(lambda: batcher.queue_depth == 0, message="the queue to drain")

The predicate is polled every ``interval`` seconds until it returns a truthy
value, which is returned; after ``timeout`` seconds an :class:`AssertionError`
says what was awaited, how long, and the last value seen. A ``message`` may be
a callable (a log file's text, read only when the wait failed).

:func:`later_than` waits for the clock itself: two records stamped with
``datetime.now()`` on a coarse clock can share a reading, and a test about
their order needs a moment strictly between them.

A sleep that *is* the behaviour under test (a token bucket refilling, a TTL
running out, a model that is slow on purpose) stays a sleep, with a comment.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

__all__ = ["DEFAULT_TIMEOUT", "later_than", "wait_until", "wait_until_async"]

T = TypeVar("T")

#: How long a wait may take before the test fails: generous, since a passing test never
#: waits this long and a loaded CI machine can be slow.
DEFAULT_TIMEOUT = 15.0
_INTERVAL = 0.02


def _failure(message: str | Callable[[], str], timeout: float, last: object) -> AssertionError:
    what = message() if callable(message) else message
    seen = repr(last)
    if len(seen) > 300:
        seen = seen[:300] + "..."
    return AssertionError(f"gave up after {timeout:g} s waiting for {what} (last value: {seen})")


def _check(timeout: float, interval: float) -> None:
    if not timeout > 0 or not interval > 0:
        raise ValueError(f"timeout and interval must be > 0, got {timeout!r} and {interval!r}")


def wait_until(
    predicate: Callable[[], T | None],
    *,
    message: str | Callable[[], str],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = _INTERVAL,
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Raises AssertionError naming ``message`` after ``timeout`` seconds. An
    exception raised by the predicate is not a "not yet": it propagates.
    """
    _check(timeout, interval)
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = end - time.monotonic()
        if left <= 0:
            raise _failure(message, timeout, value)
        time.sleep(min(interval, left))


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T | None] | None],
    *,
    message: str | Callable[[], str],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = _INTERVAL,
) -> T:
    """:func:`wait_until` for a coroutine: the event loop runs between polls.

    ``predicate`` may be a plain function or return an awaitable (an HTTP call
    on an async client).
    """
    _check(timeout, interval)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        left = end - loop.time()
        if left <= 0:
            raise _failure(message, timeout, value)
        await asyncio.sleep(min(interval, left))


def later_than(moment: datetime) -> datetime:
    """The first reading of the UTC clock that is strictly after ``moment``."""

    def now_if_later() -> datetime | None:
        now = datetime.now(UTC)
        return now if now > moment else None

    return wait_until(now_if_later, interval=0.0005, message=f"the clock to pass {moment}")
