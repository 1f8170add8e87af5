"""A circuit breaker: stop calling a dependency that keeps failing, try it again later.

::

    breaker = CircuitBreaker("cache", on_change=report)
    if breaker.allow():                 # False while open: use the fallback, no call made
        try:
            value = redis_get(key)      # with a tight timeout
        except BackendUnavailableError as exc:
            breaker.failure(exc)        # ``failures`` in a row open it
        else:
            breaker.success()

Closed, calls go through. After ``failures`` consecutive failures it opens:
:meth:`allow` says False, so callers take their degraded path at once and
nothing waits on a dead or hung service. After ``reset_s`` it lets exactly
one call through (half-open); its success closes the breaker, its failure
opens it again for twice as long (up to ``max_reset_s``). ``on_change`` is
called with the breaker on every open and close: the server's gauge, log
line and readiness detail. Thread-safe (calls come from worker threads).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["CircuitBreaker", "State"]

log = logging.getLogger("conveyor.breaker")

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive failures open it; one trial call after ``reset_s`` may close it."""

    def __init__(
        self,
        name: str,
        *,
        failures: int = 3,
        reset_s: float = 1.0,
        max_reset_s: float = 30.0,
        on_change: Callable[[CircuitBreaker], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = failures
        self.base_reset_s = reset_s
        self.max_reset_s = max_reset_s
        self.on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self.state: State = "closed"
        self._failures = 0
        self._reset_s = reset_s
        self._retry_at = 0.0
        self._trial = False  # a half-open call is in flight
        self.opened_at: float | None = None
        self.last_error: str | None = None
        #: Times it opened, and calls refused while open (fallbacks taken).
        self.opens = 0
        self.short_circuited = 0

    @property
    def degraded(self) -> bool:
        return self.state != "closed"

    def allow(self) -> bool:
        """Whether to call the dependency now (False: take the fallback)."""
        if self.state == "closed":  # the hot path: no lock
            return True
        with self._lock:
            state: State = self.state  # re-read under the lock: another thread may change it
            if state == "closed":
                return True
            if state == "open" and self._clock() >= self._retry_at:
                self.state = "half_open"
                self._trial = True
                return True
            self.short_circuited += 1
            return False

    def success(self) -> None:
        if self.state == "closed" and not self._failures:
            return
        with self._lock:
            self._failures = 0
            if self.state == "closed":
                return
            was_open_for = self._clock() - (self.opened_at or self._clock())
            self.state = "closed"
            self._trial = False
            self._reset_s = self.base_reset_s
            self.opened_at = None
        log.warning("%s answers again: closed after %.1f s degraded", self.name, was_open_for)
        self._changed()

    def failure(self, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        opened = False
        with self._lock:
            self.last_error = text
            self._failures += 1
            now = self._clock()
            if self.state == "half_open":
                self._reset_s = min(self.max_reset_s, self._reset_s * 2)
                self.state = "open"
                self._trial = False
                self._retry_at = now + self._reset_s
            elif self.state == "closed" and self._failures >= self.threshold:
                self.state = "open"
                self.opened_at = now
                self._retry_at = now + self._reset_s
                self.opens += 1
                opened = True
        if opened:
            log.error(
                "%s failed %d times in a row, degraded (next try in %.1f s): %s",
                self.name,
                self.threshold,
                self._reset_s,
                text,
            )
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:  # a reporting hook must not break the caller's fallback
                log.exception("circuit breaker %s: on_change failed", self.name)

    def retry_in(self) -> float:
        """Seconds until the next trial call (0 while closed, or when one is due): what a
        refused caller's ``Retry-After`` says."""
        if self.state == "closed":
            return 0.0
        return max(0.0, self._retry_at - self._clock())

    def to_dict(self) -> dict[str, Any]:
        """What readiness shows for a degraded dependency."""
        since = None if self.opened_at is None else round(self._clock() - self.opened_at, 3)
        return {"state": self.state, "for_s": since, "error": self.last_error}
