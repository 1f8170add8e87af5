"""What a budgeted call leaves to do once it is answered or refused: its settlement, and a
reservation it stopped waiting for.

A call's settlement (what it cost added to ``spent``, its reservation released) runs off
the answer's path. Two things can leave a reservation that no call will settle:

- **a reserve the call gave up on.** The ledger did not answer within the server's
  timeout (``serving.dependencies.store_timeout_s``), or the client went away while it
  reserved. The call answers 503 (or nothing), but the reserve goes on, in its thread or
  on Redis, and may land a moment later.
- **a settlement that failed**: the store timed out or is bypassed (its breaker open).

Left alone, such a reservation holds its budgets until it expires
(``gateway.reservation_ttl_s``, ten minutes by default): calls are refused
``budget_exceeded`` for money nobody spent, and a lost settlement loses what its call
cost. :class:`Aftercare` releases a late reservation as soon as it lands (no call counted:
the call was never made) and tries a failed settlement again, after 0.25-0.5 s and then
twice as long each time up to 15-30 s (jittered by :func:`conveyor.store.retry.backoff_delay`,
so workers that failed together do not retry in lockstep), for as long as its reservation
lives. Settling is idempotent (the reservation's rows go in the transaction, or the Lua
script, that counts them), so a settlement tried again after a timeout that did land
changes nothing.

A reserve on Redis can also fail without an answer (the script sent into a hung network,
the client's socket timeout) and still reach Redis when the network comes back. A ledger
with ``avoid`` (:class:`~conveyor.gateway.ledger_redis.RedisBudgets`) is given the
reservation's id up front, and a reserve that never answered is voided by that id: released
if it landed, refused if it lands later.

:class:`Handoff` is the threaded half: a ledger call run in a thread whose caller may stop
waiting for it. Once the caller has, a call not yet started is skipped, and one under way
hands what it reserved to the caller's :meth:`Handoff.abandon`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from conveyor.errors import BudgetExceededError
from conveyor.store.retry import backoff_delay

__all__ = ["Aftercare", "Handoff"]

log = logging.getLogger("conveyor.gateway")

_FIRST_RETRY_S = 0.5
_LAST_RETRY_S = 30.0


class Handoff:
    """``fn()`` (a reserve) for a thread, whose caller may give up on it (see the module)."""

    def __init__(self, fn: Callable[[], str]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._abandoned = False
        self._started = False
        #: What ``fn`` returned or raised, once it has run.
        self.outcome: concurrent.futures.Future[str] = concurrent.futures.Future()

    def __call__(self) -> str:
        with self._lock:
            if self._abandoned:  # its caller is gone: reserve nothing
                return ""
            self._started = True
        try:
            found = self._fn()
        except BaseException as exc:
            self.outcome.set_exception(exc)
            raise
        self.outcome.set_result(found)
        return found

    def abandon(self) -> concurrent.futures.Future[str] | None:
        """The caller stops waiting: what ``fn`` reserves, if it started (None: it will
        never run)."""
        with self._lock:
            self._abandoned = True
            return self.outcome if self._started else None


class Aftercare:
    """The settlements and late releases of one budget stage, each a task until it ends."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Future[None]] = set()
        self._closing = False

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background (a reference kept until it ends)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reserve(
        self,
        ledger: Any,
        charges: Sequence[Any],
        amount: float,
        ttl_s: float,
        *,
        run: Callable[..., Awaitable[Any]] | None,
        arun: Callable[..., Awaitable[Any]] | None,
        release: Callable[[str], Awaitable[Any]],
    ) -> str:
        """``ledger``'s reservation of ``amount`` on ``charges``: awaited through ``arun``
        for a ledger with ``areserve`` (Redis: the server's timeout and breaker), else run
        in a thread through ``run`` (the store's). A reserve its caller stops waiting for
        is handed to ``release`` if it lands (see the module)."""
        areserve = getattr(ledger, "areserve", None)
        if areserve is not None:
            started: list[asyncio.Task[str]] = []
            # a ledger that can void (Redis) gets the id first: a reserve whose answer was
            # lost may still reach it later, and is refused then
            avoid = getattr(ledger, "avoid", None)
            named = {"reservation": uuid.uuid4().hex} if avoid is not None else {}

            async def attempt() -> str:
                task = asyncio.ensure_future(areserve(charges, amount, ttl_s, **named))
                started.append(task)
                return await asyncio.shield(task)  # it goes on if this call gives up

            try:
                return await (arun(attempt) if arun is not None else attempt())
            except BaseException:
                if started and not _refused(started[0]):  # it may land after
                    void = None
                    if avoid is not None:
                        void = functools.partial(avoid, named["reservation"], amount, ttl_s)
                    self.release_late(started[0], release, void)
                raise
        handoff = Handoff(lambda: ledger.reserve(charges, amount, ttl_s))
        try:
            found: str = await (run(handoff) if run is not None else asyncio.to_thread(handoff))
            return found
        except BaseException:
            landed = handoff.abandon()
            if landed is not None and not _refused(landed):  # it may land after
                self.release_late(asyncio.wrap_future(landed), release)
            raise

    def release_late(
        self,
        landed: Awaitable[str],
        release: Callable[[str], Awaitable[Any]],
        void: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """Once ``landed`` (a reserve its call gave up on) gives a reservation, release it
        with ``release(reservation)``. If it fails without an answer (a timeout, a cut
        connection: the reserve may still reach the ledger), ``void()`` until it works."""
        self.start(self._release_late(landed, release, void))

    async def _release_late(
        self,
        landed: Awaitable[str],
        release: Callable[[str], Awaitable[Any]],
        void: Callable[[], Awaitable[Any]] | None,
    ) -> None:
        try:
            reservation = await landed
        except BudgetExceededError:  # refused: nothing reserved
            return
        except Exception:  # no answer: it may have landed, or may land yet
            if void is not None:
                await self.persist("voiding a budget reservation whose answer was lost", void)
            return
        if not reservation:  # skipped: it had not started when its call gave up
            return
        log.warning("budget reservation %s landed after its call gave up: released", reservation)
        await self.persist(f"releasing budget reservation {reservation}", release, reservation)

    async def persist(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """``await fn(*args)``, tried again while it fails (see the module) until the
        reservation it is about would have expired, or the stage drains (one last try)."""
        deadline = time.monotonic() + self.ttl_s
        for retry in itertools.count():
            # half the doubling wait, plus up to as much again at random: workers that
            # failed together (a store outage) do not come back in lockstep
            half = min(_FIRST_RETRY_S * 2**retry, _LAST_RETRY_S) / 2
            delay = half + backoff_delay(retry, base_delay=_FIRST_RETRY_S / 2, max_delay=half)
            try:
                await fn(*args)
                return
            except Exception as exc:
                if self._closing or time.monotonic() + delay >= deadline:
                    log.error(
                        "%s failed, not tried again (the reservation expires after "
                        "gateway.reservation_ttl_s): %s",
                        what,
                        exc,
                    )
                    return
                log.warning("%s failed, trying again in %.2f s: %s", what, delay, exc)
            await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``, cut short when the stage drains."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _wake, woken)
        self._waiting.add(woken)
        try:
            await woken
        finally:
            timer.cancel()
            self._waiting.discard(woken)

    async def drain(self, timeout: float = 10.0) -> None:
        """Let the work under way finish: a settlement waiting to be tried again is tried
        once more at once. What still waits on the ledger after ``timeout`` seconds is
        left to expire (logged)."""
        self._closing = True
        for woken in list(self._waiting):
            _wake(woken)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._tasks:  # (a stream ending meanwhile starts one more)
            left = end - loop.time()
            if left <= 0:
                pending = list(self._tasks)
                log.warning(
                    "%d budget settlement(s) still waiting on the ledger at shut-down: "
                    "their reservations expire after gateway.reservation_ttl_s",
                    len(pending),
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                return
            await asyncio.wait(set(self._tasks), timeout=left)


def _refused(outcome: asyncio.Future[str] | concurrent.futures.Future[str]) -> bool:
    """Whether a reserve already ended knowing it reserved nothing (refused, cancelled)."""
    if not outcome.done():
        return False
    return outcome.cancelled() or isinstance(outcome.exception(), BudgetExceededError)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
