"""Budgets that hold under concurrency: reserve a call's maximum cost before it, settle
what it cost after it.

::

    gateway:
      prices:
        mini: {input: 0.15, cached_input: 0.075, output: 0.60}   # USD per million tokens
      budgets:
        - {name: per-key-daily, scope: key, period: day, limit_usd: 5}
        - {name: acme-monthly, scope: team, subject: acme, period: month, limit_usd: 200}
        - {name: smart-total, scope: model, subject: smart, period: total, limit_usd: 1000}

A budget counts per subject of its scope (each key, user, team, conversation or model, or
one named ``subject``), per period (UTC day or month, or in total). Before a call, its most
expensive outcome (the prompt counted, ``max_tokens`` times ``n`` generated, at the most
expensive deployment it may go to) is **reserved** on every budget that applies, all or
nothing, in one transaction of the project's store (or one Lua script in Redis with
``gateway.budgets_url``: :mod:`conveyor.gateway.ledger_redis`, some fifty times cheaper):
each counter moves by a conditional
UPDATE (``spent + reserved + amount <= limit``), which PostgreSQL's row lock and SQLite's
single writer serialize. So concurrent calls can never reserve past a limit together, and
what is spent can pass the limit only by what a call cost beyond its reservation (its
prompt under-counted: bounded by one call). After the call, its actual cost (the
upstream's usage priced at the deployment that answered) is **settled**: added to
``spent``, its reservation released. A stream the client stopped is settled with what was
generated. A reservation a crashed process never settled expires after
``gateway.reservation_ttl_s`` and is released by the next reservation on its counter.

A call a budget cannot take is refused before any upstream call with HTTP 429, code
``budget_exceeded``, a message naming the budget, its scope and subject, limit, spent and
reserved, and a ``Retry-After`` until the period resets (none for ``total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from conveyor.errors import BudgetExceededError
from conveyor.gateway.aftercare import Aftercare
from conveyor.gateway.costs import cost_of, max_cost, prompt_tokens, requested_output
from conveyor.gateway.tables import LlmBudgetCounterRecord, LlmBudgetReservationRecord
from conveyor.gateway.types import Usage

if TYPE_CHECKING:
    from conveyor.gateway.settings import BudgetSpec, GatewaySpec
    from conveyor.gateway.turn import Outcome, Proceed, Turn
    from conveyor.store.database import MetadataStore

__all__ = ["BudgetStage", "Charge", "Ledger", "SqlBudgets", "exceeded", "ledger_of", "period_of"]

log = logging.getLogger("conveyor.gateway")

#: Completion tokens assumed when a request names no max_tokens and no default is set.
DEFAULT_OUTPUT = 4096


def period_of(period: str, now: datetime) -> tuple[datetime, datetime | None]:
    """The start of the period holding ``now`` and the start of the next (None: never)."""
    if period == "total":
        return datetime(1970, 1, 1, tzinfo=UTC), None
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    start = day.replace(day=1)
    following = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else (start.replace(month=start.month + 1))
    )
    return start, following


@dataclass(frozen=True, slots=True)
class Charge:
    """One budget a call counts against: the budget and the subject it counts for."""

    budget: BudgetSpec
    subject: str


class SqlBudgets:
    """The counters and reservations in the project's store (SQLite or PostgreSQL)."""

    def __init__(self, store: MetadataStore, *, clock: Callable[[], datetime] | None = None):
        self.store = store
        self.clock = clock or (lambda: datetime.now(UTC))

    def reserve(self, charges: Sequence[Charge], amount: float, ttl_s: float) -> str:
        """Reserve ``amount`` USD on every charge, all or nothing; the reservation's id.
        BudgetExceededError naming the first budget that cannot take it."""
        now = self.clock()
        reservation = uuid.uuid4().hex
        with self.store.session() as session:
            for charge in charges:
                start, _ = period_of(charge.budget.period, now)
                key = (charge.budget.name, charge.subject, start)
                self._release_expired(session, key, now)
                table = LlmBudgetCounterRecord
                # the period's counter, created once (concurrent first calls race here)
                session.execute(
                    _insert(session)(table)
                    .values(
                        budget=key[0],
                        subject=key[1],
                        period_start=start,
                        limit_usd=charge.budget.limit_usd,
                        spent_usd=0.0,
                        reserved_usd=0.0,
                        calls=0,
                        updated_at=now,
                    )
                    .on_conflict_do_nothing()
                )
                moved = session.execute(
                    sa.update(table)
                    .where(
                        table.budget == key[0],
                        table.subject == key[1],
                        table.period_start == start,
                        table.spent_usd + table.reserved_usd + amount <= charge.budget.limit_usd,
                    )
                    .values(
                        reserved_usd=table.reserved_usd + amount,
                        limit_usd=charge.budget.limit_usd,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    counter = session.get(LlmBudgetCounterRecord, key, populate_existing=True)
                    spent = counter.spent_usd if counter is not None else 0.0
                    reserved = counter.reserved_usd if counter is not None else 0.0
                    raise exceeded(charge, spent, reserved, amount, now)
                session.add(
                    LlmBudgetReservationRecord(
                        id=reservation,
                        budget=key[0],
                        subject=key[1],
                        period_start=start,
                        amount_usd=amount,
                        expires_at=now + timedelta(seconds=ttl_s),
                    )
                )
        return reservation

    def settle(self, reservation: str, cost: float) -> None:
        """Release the reservation and add ``cost`` to what each of its counters spent."""
        now = self.clock()
        with self.store.session() as session:
            for row in _held(session, reservation):
                self._move(session, row, spent=cost, calls=1, now=now)
                session.delete(row)

    def adjust(
        self, reservation: str, cost: float, calls: int, release: float, ttl_s: float
    ) -> float:
        """Part of a reservation used (a budget lease's flush): ``cost`` added to what each
        of its counters spent and ``calls`` to their calls, ``release`` (at most what is
        left) released; what is left lives ``ttl_s`` more. What is left, 0 when nothing
        is (the reservation is gone)."""
        now = self.clock()
        left = 0.0
        with self.store.session() as session:
            for row in _held(session, reservation):
                freed = min(release, row.amount_usd)
                self._move(session, row, spent=cost, calls=calls, now=now, release=freed)
                row.amount_usd -= freed
                left = row.amount_usd
                if row.amount_usd <= 1e-12:
                    session.delete(row)
                else:
                    row.expires_at = now + timedelta(seconds=ttl_s)
        return max(0.0, left)

    def _release_expired(self, session: Any, key: tuple[str, str, datetime], now: datetime) -> None:
        table = LlmBudgetReservationRecord
        expired = session.scalars(
            sa.select(table).where(
                table.budget == key[0],
                table.subject == key[1],
                table.period_start == key[2],
                table.expires_at < now,
            )
        ).all()
        for row in expired:
            log.warning("a budget reservation expired unsettled: %s on %s", row.id, key[0])
            self._move(session, row, spent=0.0, calls=0, now=now)
            session.delete(row)
        if expired:
            session.flush()

    @staticmethod
    def _move(
        session: Any,
        row: Any,
        *,
        spent: float,
        calls: int,
        now: datetime,
        release: float | None = None,
    ) -> None:
        """``row``'s counter: ``release`` (default: the whole reservation) released,
        ``spent`` and ``calls`` added."""
        table = LlmBudgetCounterRecord
        freed = row.amount_usd if release is None else release
        session.execute(
            sa.update(table)
            .where(
                table.budget == row.budget,
                table.subject == row.subject,
                table.period_start == row.period_start,
            )
            .values(
                reserved_usd=sa.func.max(table.reserved_usd - freed, 0.0)
                if session.bind.dialect.name == "sqlite"
                else sa.func.greatest(table.reserved_usd - freed, 0.0),
                spent_usd=table.spent_usd + spent,
                calls=table.calls + calls,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )

    def counters(self) -> list[dict[str, Any]]:
        """Every counter, newest period first."""
        with self.store.read() as session:
            rows = session.scalars(
                sa.select(LlmBudgetCounterRecord).order_by(
                    LlmBudgetCounterRecord.period_start.desc(),
                    LlmBudgetCounterRecord.budget,
                    LlmBudgetCounterRecord.subject,
                )
            ).all()
            return [
                {
                    "budget": r.budget,
                    "subject": r.subject,
                    "period_start": r.period_start.isoformat(),
                    "limit_usd": r.limit_usd,
                    "spent_usd": round(r.spent_usd, 9),
                    "reserved_usd": round(r.reserved_usd, 9),
                    "calls": r.calls,
                }
                for r in rows
            ]


def exceeded(
    charge: Charge, spent: float, reserved: float, amount: float, now: datetime
) -> BudgetExceededError:
    """The error of a call ``charge``'s counter (at ``spent`` and ``reserved``) cannot take."""
    budget = charge.budget
    _, resets = period_of(budget.period, now)
    when = "never resets" if resets is None else f"resets at {resets.isoformat()}"
    return BudgetExceededError(
        f"budget {budget.name!r} ({budget.scope} {charge.subject!r}, per {budget.period}) "
        f"would be exceeded: limit ${budget.limit_usd:g}, spent ${spent:.6f}, reserved "
        f"${reserved:.6f} by calls in flight, this call may cost up to ${amount:.6f}; "
        f"it {when}",
        retry_after=max(1.0, (resets - now).total_seconds()) if resets else 3600.0,
        budget=budget.name,
        scope=budget.scope,
        subject=charge.subject,
        period=budget.period,
        limit_usd=budget.limit_usd,
        spent_usd=round(spent, 9),
        reserved_usd=round(reserved, 9),
        resets_at=None if resets is None else resets.isoformat(),
    )


class Ledger(Protocol):
    """Where budgets are counted: :class:`SqlBudgets` (the project's store, the default)
    or :class:`~conveyor.gateway.ledger_redis.RedisBudgets` (``gateway.budgets_url``)."""

    def reserve(self, charges: Sequence[Charge], amount: float, ttl_s: float) -> str: ...
    def settle(self, reservation: str, cost: float) -> None: ...
    def adjust(
        self, reservation: str, cost: float, calls: int, release: float, ttl_s: float
    ) -> float: ...
    def counters(self) -> list[dict[str, Any]]: ...


def ledger_of(project: Any, spec: GatewaySpec | None = None) -> Ledger:
    """The project's budget ledger: Redis when ``gateway.budgets_url`` names it, else the
    project's store."""
    if spec is None:
        from conveyor.gateway.settings import gateway_of

        spec = gateway_of(project.spec)
    if spec is not None and spec.budgets_url:
        from conveyor.gateway.ledger_redis import RedisBudgets

        return RedisBudgets(spec.budgets_url)
    return SqlBudgets(project.store)


def _held(session: Any, reservation: str) -> list[Any]:
    """The rows of a reservation (one per counter it charges)."""
    table = LlmBudgetReservationRecord
    return list(session.scalars(sa.select(table).where(table.id == reservation)).all())


def _insert(session: Any) -> Any:
    """The dialect's INSERT (both take ON CONFLICT DO NOTHING)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert


def _subject(budget: BudgetSpec, turn: Turn) -> str | None:
    scope = budget.scope
    value: str | None
    if scope == "global":
        value = "*"
    elif scope == "model":
        value = turn.record.model
    else:
        value = getattr(turn, scope)
    if value is None or (budget.subject is not None and value != budget.subject):
        return None
    return value


class BudgetStage:
    """Prices every call and holds the budgets (see the module)."""

    name = "budgets"

    def __init__(
        self,
        spec: GatewaySpec,
        ledger: Ledger,
        run: Any = None,
        arun: Any = None,
        after: Aftercare | None = None,
    ) -> None:
        self.spec = spec
        self.ledger = ledger
        self._run = run
        self._arun = arun
        # a ledger with a client of the event loop's own (Redis) is awaited there, not in a
        # thread: no hop, no lock handed between threads
        self._async = hasattr(ledger, "areserve")
        #: Settlements, and reservations their calls gave up on (conveyor.gateway.aftercare).
        self._after = after or Aftercare(spec.reservation_ttl_s)

    async def _call(self, name: str, *args: Any) -> Any:
        if self._async:
            method = getattr(self.ledger, "a" + name)
            if self._arun is not None:  # the server's dependency calls: timeout, breaker
                return await self._arun(method, *args)
            return await method(*args)
        fn = getattr(self.ledger, name)
        if self._run is not None:
            return await self._run(fn, *args)
        return await asyncio.to_thread(fn, *args)

    def charges(self, turn: Turn) -> list[Charge]:
        found = []
        for budget in self.spec.budgets:
            if budget.models and turn.record.model not in budget.models:
                continue
            subject = _subject(budget, turn)
            if subject is not None:
                found.append(Charge(budget, subject))
        return found

    async def __call__(self, turn: Turn, proceed: Proceed) -> Outcome:
        spec = self.spec
        alias = spec.models.get(turn.record.model)
        deployments = list(alias.deployments) if alias else [turn.record.model]
        prompt = prompt_tokens(turn.body, spec.counter(turn.record.model))
        output = 0 if turn.endpoint == "embeddings" else requested_output(turn.body, DEFAULT_OUTPUT)
        charges = self.charges(turn)
        reservation = None
        if charges:
            amount = max_cost(spec, deployments, prompt, output)
            reservation = await self._reserve(charges, amount)
            turn.event["budgets"] = [c.budget.name for c in charges]
        try:
            outcome = await proceed(turn)
        except BaseException:
            if reservation is not None:  # in the background: the error is not held up
                self._after.start(self._settle(reservation, 0.0))
            raise
        if isinstance(outcome, dict):
            usage = Usage.from_openai(outcome.get("usage"))
            self._finish(turn, reservation, usage, prompt)
            return outcome
        if hasattr(outcome, "__anext__"):
            return self._stream(turn, outcome, reservation, prompt)
        if reservation is not None:  # a stage inside answered itself: nothing generated
            self._after.start(self._settle(reservation, 0.0))
        return outcome

    async def _stream(
        self, turn: Turn, chunks: AsyncIterator[Any], reservation: str | None, prompt: int
    ) -> AsyncIterator[Any]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
            # the usage chunk, when the upstream sent it; else what went by
            self._finish(turn, reservation, turn.usage, prompt)

    def _finish(
        self, turn: Turn, reservation: str | None, usage: Usage | None, prompt: int
    ) -> None:
        estimated = usage is None
        if usage is None:  # a stream cut before its usage chunk: what was counted
            usage = Usage(prompt, turn.chunks_with_text, 0)
            turn.event["prompt_tokens"] = prompt
            turn.event["completion_tokens"] = turn.chunks_with_text
        price = self.spec.prices.get(turn.record.deployment or "")
        cost = cost_of(usage, price) if price is not None else 0.0
        if price is not None:
            turn.event["cost_usd"] = round(cost, 9)
        turn.event["usage_estimated"] = estimated
        if reservation is not None:  # off the answer's path: nothing in it waits for this
            self._after.start(self._settle(reservation, cost))

    async def drain(self) -> None:
        """Wait for the settlements still running, then close the ledger's client of this
        event loop (a server stopping)."""
        await self._after.drain()
        ledger: Any = self.ledger
        drain = getattr(ledger, "drain", None)
        if drain is not None:  # budget leases: what was spent written, the slices given back
            await drain()
            ledger = ledger.backing
        aclose = getattr(ledger, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _reserve(self, charges: Sequence[Charge], amount: float) -> str:
        """``amount`` reserved on every charge; one this call stops waiting for (the
        ledger's timeout, the client gone) is released if it lands, not left to expire."""
        return await self._after.reserve(
            self.ledger,
            charges,
            amount,
            self.spec.reservation_ttl_s,
            run=self._run,
            arun=self._arun,
            release=lambda r: self._release(r, amount),
        )

    async def _release(self, reservation: str, amount: float) -> None:
        """A reservation whose call was never made: freed, nothing spent, no call counted."""
        local = getattr(self.ledger, "arelease", None)
        if local is not None:  # a lease's reservation, in this process's memory
            await local(reservation)
            return
        await self._call("adjust", reservation, 0.0, 0, amount, self.spec.reservation_ttl_s)

    async def _settle(self, reservation: str, cost: float) -> None:
        # tried again while the ledger fails; the call's answer stands either way
        await self._after.persist(
            f"settling budget reservation {reservation}", self._call, "settle", reservation, cost
        )
