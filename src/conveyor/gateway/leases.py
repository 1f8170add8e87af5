"""Budget leases: each worker reserves a slice of a budget in the ledger and spends it in
memory, so a call touches the ledger only when its worker's slice runs out.

::

    gateway:
      budgets_url: redis://127.0.0.1:6379/0   # or the project's store
      budget_lease: 0.02                      # a slice: 2% of the budget's limit

Without leases a call costs two ledger round trips (reserve, settle). With them, a call
whose charges (the budgets it counts against) have a lease with room is reserved and
settled in this process's memory (microseconds); a call that finds no room reserves a new
slice in the ledger, ``budget_lease`` of the smallest limit it charges (at least the
call's own maximum cost), all or nothing like any reservation. Every 0.1 s what the
calls spent is written to the ledger (:meth:`adjust`: added to ``spent``, taken out of the
lease's reservation), and a lease idle for a second is given back.

What holds. The ledger's reservations still cover everything the worker may spend: the
slices it holds are reserved there, and a call is only let through against room in a
slice. So across all workers spending can pass a limit only by what a call cost beyond
its own reservation, as without leases. What is different: near a limit, a call may be
refused while another worker holds an unused slice (early, never late, by at most one
slice per worker); the counters other processes read lag what was spent by up to 0.1 s;
a worker killed mid-slice leaves its slice reserved until ``reservation_ttl_s`` expires
it (its unflushed spending of the last 0.1 s is lost with it, as an unsettled call's is).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from conveyor.errors import BudgetExceededError
from conveyor.gateway.budgets import Charge, Ledger, period_of

__all__ = ["LeasedLedger"]

log = logging.getLogger("conveyor.gateway")


class _Lease:
    """One set of charges' slices in this process."""

    __slots__ = ("calls", "charges", "held", "inflight", "last_used", "size", "spent", "used")

    def __init__(self, charges: Sequence[Charge]) -> None:
        self.charges = list(charges)
        #: The ledger's reservations backing it: [id, what is left of it].
        self.held: list[list[Any]] = []
        self.size = 0.0  # reserved in the ledger, not yet flushed as spent
        self.used = 0.0  # reserved by calls in flight here
        self.inflight = 0  # how many (a count: no float residue decides a lease is idle)
        self.spent = 0.0  # what settled calls cost, not yet written to the ledger
        self.calls = 0
        self.last_used = time.monotonic()

    def room(self) -> float:
        return self.size - self.used - self.spent


class LeasedLedger:
    """A :class:`~conveyor.gateway.budgets.Ledger` wrapped with leases (see the module).
    Its ``areserve`` and ``asettle`` run on one event loop (no lock: nothing awaits between
    reading a lease and updating it, except the ledger's own calls, after which it is read
    again)."""

    flush_every_s = 0.1
    idle_s = 1.0

    def __init__(
        self,
        backing: Ledger,
        fraction: float,
        ttl_s: float,
        *,
        call: Callable[..., Awaitable[Any]] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.backing = backing
        self.fraction = fraction
        self.ttl_s = ttl_s
        self._call = call or self._direct
        self.clock = clock or (lambda: datetime.now(UTC))
        self._leases: dict[tuple[Any, ...], _Lease] = {}
        self._local: dict[str, tuple[_Lease, float]] = {}
        self._ids = itertools.count()
        self._growing: dict[tuple[Any, ...], asyncio.Lock] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._closing = False

    async def _direct(self, name: str, *args: Any) -> Any:
        method = getattr(self.backing, "a" + name, None)
        if method is not None:
            return await method(*args)
        return await asyncio.to_thread(getattr(self.backing, name), *args)

    def _key(self, charges: Sequence[Charge]) -> tuple[Any, ...]:
        now = self.clock()
        return tuple(
            sorted((c.budget.name, c.subject, period_of(c.budget.period, now)[0]) for c in charges)
        )

    async def areserve(self, charges: Sequence[Charge], amount: float, ttl_s: float) -> str:
        """Reserve ``amount`` against a lease of ``charges`` (a new slice when it has no
        room); a local reservation id. BudgetExceededError from the ledger when not even
        ``amount`` can be reserved there."""
        self._start()
        key = self._key(charges)
        lease = self._leases.get(key)
        if lease is None or lease.room() < amount:
            # one slice asked for at a time per set of charges: the calls that came in
            # meanwhile wait for it, then look again (no herd of slices)
            lock = self._growing.setdefault(key, asyncio.Lock())
            async with lock:
                lease = self._leases.get(key)
                if lease is None or lease.room() < amount:
                    lease = await self._grow(key, charges, amount)
        lease.used += amount
        lease.inflight += 1
        lease.last_used = time.monotonic()
        local = f"lease:{next(self._ids)}"
        self._local[local] = (lease, amount)
        return local

    async def _grow(self, key: tuple[Any, ...], charges: Sequence[Charge], amount: float) -> _Lease:
        """A new slice reserved in the ledger for ``charges`` (just ``amount`` when a slice
        no longer fits), added to their lease."""
        smallest = min(c.budget.limit_usd for c in charges)
        slice_ = max(amount, smallest * self.fraction)
        try:
            held = await self._call("reserve", charges, slice_, self.ttl_s)
            got = slice_
        except BudgetExceededError:
            if slice_ <= amount:
                raise
            held = await self._call("reserve", charges, amount, self.ttl_s)  # just this one
            got = amount
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease(charges)
        lease.held.append([held, got])
        lease.size += got
        return lease

    async def asettle(self, reservation: str, cost: float) -> None:
        """The local reservation settled: its amount freed in the lease, ``cost`` to be
        written to the ledger at the next flush."""
        lease = self._free(reservation)
        if lease is not None:
            lease.spent += cost
            lease.calls += 1

    async def arelease(self, reservation: str) -> None:
        """A local reservation whose call was never made (its caller gave up while it was
        reserved): its amount freed in the lease, nothing spent, no call counted."""
        self._free(reservation)

    def _free(self, reservation: str) -> _Lease | None:
        """The local reservation's amount freed in its lease; the lease (None: no such
        reservation, or it was freed already)."""
        found = self._local.pop(reservation, None)
        if found is None:
            return None
        lease, amount = found
        lease.inflight -= 1
        lease.used = lease.used - amount if lease.inflight else 0.0
        lease.last_used = time.monotonic()
        return lease

    def _start(self) -> None:
        if self._flusher is None and not self._closing:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name="conveyor-budget-leases"
            )

    async def _flush_loop(self) -> None:
        # stopped between flushes, never cancelled inside one: a lease half given back
        # would stay reserved until it expires
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_every_s)
            try:
                await self.flush()
            except Exception:  # the ledger away: try again at the next turn
                log.exception("flushing budget leases failed")

    async def flush(self, *, release_all: bool = False) -> None:
        """Write what each lease's calls spent to the ledger; give back the leases idle
        for ``idle_s`` (every lease not in use, with ``release_all``)."""
        now = time.monotonic()
        for key, lease in list(self._leases.items()):
            idle = not lease.inflight and (release_all or now - lease.last_used > self.idle_s)
            if lease.spent <= 0 and not idle:
                continue
            spent, calls = lease.spent, lease.calls
            lease.spent, lease.calls = 0.0, 0
            lease.size -= spent
            if idle:  # gone before the first await: a new call makes a lease of its own
                del self._leases[key]
                lease.size = 0.0
            # the spending comes out of the oldest reservations first, each adjust moving
            # as much from reserved to spent as it releases (the counters never read more
            # used than there is, beyond a moment's cost past its reservation); the cost
            # beyond them all (a call that cost more than it reserved) goes with the last
            left = spent
            entries = [e for e in lease.held if e[1] > 1e-12] or lease.held[-1:]
            for i, entry in enumerate(entries):
                last = i == len(entries) - 1
                part = left if last else min(left, entry[1])
                freed = min(part, entry[1]) + (entry[1] - min(part, entry[1]) if idle else 0.0)
                entry[1] = await self._call("adjust", entry[0], part, calls, freed, self.ttl_s)
                left -= part
                calls = 0
                if left <= 1e-12 and not idle:
                    break
            if left > 1e-12 or calls:  # no reservation left to carry it: spent all the same
                extra = await self._call("reserve", lease.charges, 0.0, self.ttl_s)
                await self._call("adjust", extra, max(left, 0.0), calls, 0.0, self.ttl_s)
            lease.held = [e for e in lease.held if e[1] > 1e-12]

    async def drain(self) -> None:
        """Stop flushing; write everything and give every lease back (a server stopping)."""
        self._closing = True
        self._stopping.set()
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
            self._flusher = None
        await self.flush(release_all=True)

    # the synchronous Ledger surface, for reports (they read the ledger itself)
    def reserve(self, charges: Sequence[Charge], amount: float, ttl_s: float) -> str:
        return self.backing.reserve(charges, amount, ttl_s)

    def settle(self, reservation: str, cost: float) -> None:
        self.backing.settle(reservation, cost)

    def adjust(
        self, reservation: str, cost: float, calls: int, release: float, ttl_s: float
    ) -> float:
        return self.backing.adjust(reservation, cost, calls, release, ttl_s)

    def counters(self) -> list[dict[str, Any]]:
        return self.backing.counters()
