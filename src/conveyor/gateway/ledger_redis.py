"""The budget ledger in Redis: the same reservations and settlements as
:class:`~conveyor.gateway.budgets.SqlBudgets`, in one round trip each.

::

    gateway:
      budgets_url: redis://127.0.0.1:6379/0?prefix=conveyor:budgets:

A reservation is one Lua script, atomic on the Redis server: it releases the counters'
expired reservations, checks ``spent + reserved + amount <= limit`` on every counter the
call charges, and only when all of them can take it moves them all; so concurrent calls
from every worker and machine can never reserve past a limit together, as on SQL. A
settlement is a second script: the reservation's amount released, the cost added to
``spent``, one call counted. About 0.1 ms a call against some 5 ms for a SQLite
transaction (``benchmarks/gateway.py --stages budgets --budgets-url redis://...``).

Keys, all with one hash tag (``PREFIX{ledger}``) so a Redis Cluster keeps them in one slot
(a script's keys must share one):

- ``PREFIX{ledger}c:BUDGET|SUBJECT|PERIOD_START``: a counter, a hash (budget, subject,
  period_start, limit, spent, reserved, calls, updated), expiring 35 days after its day
  ends, 400 days after its month ends (``total`` never);
- ``PREFIX{ledger}c:...:held``: the counter's reservations (``ID|AMOUNT``) by expiry time, a
  sorted set: what the next reservation releases when a process never settled;
- ``PREFIX{ledger}r:ID``: a reservation, a hash counter key -> amount, gone a minute after
  it expires.

Amounts are USD as doubles, like the SQL ledger's columns. Redis errors become
BackendUnavailableError naming host and port (the stage's breaker counts them).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.backends import BackendURL, unavailable
from conveyor.errors import ClosedError, InvalidInputError, MissingDependencyError
from conveyor.gateway.budgets import Charge, exceeded, period_of

__all__ = ["RedisBudgets"]

_DEFAULT_PREFIX = "conveyor:budgets:"

#: How long a counter outlives its period (seconds), by period.
_KEEP_S = {"day": 35 * 86400, "month": 400 * 86400}

# KEYS: the counters (n), then the reservation key.
# ARGV: amount, now (epoch s), expires (epoch s), reservation id, n, then per counter:
# limit, budget, subject, period_start, seconds to keep it (0: for ever). Times to expire
# keys are relative (EXPIRE): Redis's clock need not agree with the caller's.
_RESERVE = """
local amount = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local expires = tonumber(ARGV[3])
local id = ARGV[4]
local n = tonumber(ARGV[5])
local res = KEYS[n + 1]
local stem = string.sub(res, 1, #res - #id)
-- 0. its caller gave up on it and voided it (a script that waited in a hung network)
if redis.call('EXISTS', res .. ':void') == 1 then
  return {-1}
end
-- 1. what crashed processes never settled is released
for i = 1, n do
  local counter = KEYS[i]
  local held = counter .. ':held'
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', held, '-inf', '(' .. now)) do
    local bar = string.find(old, '|', 1, true)
    local left = tonumber(redis.call('HGET', counter, 'reserved') or '0')
      - tonumber(string.sub(old, bar + 1))
    if left < 0 then left = 0 end
    redis.call('HSET', counter, 'reserved', string.format('%.17g', left))
    redis.call('HDEL', stem .. string.sub(old, 1, bar - 1), counter)
    redis.call('ZREM', held, old)
  end
end
-- 2. every counter can take it, or nothing moves
for i = 1, n do
  local base = 5 + (i - 1) * 5
  local values = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local spent = tonumber(values[1] or '0')
  local reserved = tonumber(values[2] or '0')
  if spent + reserved + amount > tonumber(ARGV[base + 1]) then
    return {i, string.format('%.17g', spent), string.format('%.17g', reserved)}
  end
end
-- 3. all of them move
for i = 1, n do
  local base = 5 + (i - 1) * 5
  local counter = KEYS[i]
  local fresh = redis.call('HSETNX', counter, 'budget', ARGV[base + 2]) == 1
  if fresh then
    redis.call('HSET', counter, 'subject', ARGV[base + 3], 'period_start', ARGV[base + 4],
      'spent', '0', 'calls', '0')
  end
  redis.call('HSET', counter, 'limit', ARGV[base + 1], 'updated', ARGV[2])
  redis.call('HINCRBYFLOAT', counter, 'reserved', ARGV[1])
  redis.call('ZADD', counter .. ':held', expires, id .. '|' .. ARGV[1])
  redis.call('HSET', res, counter, ARGV[1])
  local keep = tonumber(ARGV[base + 5])
  if fresh and keep > 0 then  -- a counter outlives its period by keep seconds
    redis.call('EXPIRE', counter, keep)
    redis.call('EXPIRE', counter .. ':held', keep)
  end
end
redis.call('EXPIRE', res, math.ceil(expires - now) + 60)
return {0}
"""

# KEYS: the reservation key. ARGV: cost, now (epoch s), reservation id.
_SETTLE = """
local held = redis.call('HGETALL', KEYS[1])
for i = 1, #held, 2 do
  local counter = held[i]
  local left = tonumber(redis.call('HGET', counter, 'reserved') or '0') - tonumber(held[i + 1])
  if left < 0 then left = 0 end
  if redis.call('EXISTS', counter) == 1 then
    redis.call('HSET', counter, 'reserved', string.format('%.17g', left), 'updated', ARGV[2])
    redis.call('HINCRBYFLOAT', counter, 'spent', ARGV[1])
    redis.call('HINCRBY', counter, 'calls', 1)
  end
  redis.call('ZREM', counter .. ':held', ARGV[3] .. '|' .. held[i + 1])
end
redis.call('DEL', KEYS[1])
return #held / 2
"""


# KEYS: the reservation key. ARGV: cost, now (epoch s), reservation id, release, calls,
# expires (epoch s): part of a reservation used (a lease's flush). Returns what is left.
_ADJUST = """
local held = redis.call('HGETALL', KEYS[1])
local left = 0
for i = 1, #held, 2 do
  local counter = held[i]
  local amount = tonumber(held[i + 1])
  local freed = math.min(tonumber(ARGV[4]), amount)
  local reserved = tonumber(redis.call('HGET', counter, 'reserved') or '0') - freed
  if reserved < 0 then reserved = 0 end
  if redis.call('EXISTS', counter) == 1 then
    redis.call('HSET', counter, 'reserved', string.format('%.17g', reserved), 'updated', ARGV[2])
    redis.call('HINCRBYFLOAT', counter, 'spent', ARGV[1])
    redis.call('HINCRBY', counter, 'calls', tonumber(ARGV[5]))
  end
  redis.call('ZREM', counter .. ':held', ARGV[3] .. '|' .. held[i + 1])
  local rest = amount - freed
  if rest > 1e-12 then
    local text = string.format('%.17g', rest)
    redis.call('HSET', KEYS[1], counter, text)
    redis.call('ZADD', counter .. ':held', tonumber(ARGV[6]), ARGV[3] .. '|' .. text)
    left = rest
  else
    redis.call('HDEL', KEYS[1], counter)
  end
end
if left > 0 then
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[6]) - tonumber(ARGV[2])) + 60)
end
return string.format('%.17g', left)
"""

# KEYS: the reservation key. ARGV: as _ADJUST's (all of it released, no cost, no call),
# then how long the void lives (s): a reserve of this id reaching Redis later is refused.
_VOID = "redis.call('SET', KEYS[1] .. ':void', '1', 'EX', math.ceil(tonumber(ARGV[7])))\n" + _ADJUST


class RedisBudgets:
    """Counters and reservations in Redis, shared by every worker and machine on the same
    database (see the module). Same methods as :class:`~conveyor.gateway.budgets.SqlBudgets`."""

    def __init__(
        self,
        url: str | BackendURL,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        try:
            import redis

            from conveyor.redis_pool import connection_pool
        except ImportError as exc:  # pragma: no cover - redis is a core dependency
            raise MissingDependencyError(
                "the Redis budget ledger needs redis-py: pip install 'conveyor[redis]'",
                package="redis",
            ) from exc
        parsed = BackendURL.parse(url)
        prefix = parsed.query.get("prefix", _DEFAULT_PREFIX)
        if not prefix:
            raise InvalidInputError(f"{parsed}: prefix must not be empty", field="prefix")
        self.url, pool = connection_pool(
            parsed, options=("prefix",), socket_timeout=1.0, connect_timeout=1.0, retries=0
        )
        self.prefix = prefix + "{ledger}"  # one hash tag: one Cluster slot
        self.clock = clock or (lambda: datetime.now(UTC))
        self._client = redis.Redis(connection_pool=pool)
        self._reserve = self._client.register_script(_RESERVE)
        self._settle = self._client.register_script(_SETTLE)
        self._adjust = self._client.register_script(_ADJUST)
        self._void = self._client.register_script(_VOID)
        self._aclient: Any = None
        self._ascripts: dict[str, Any] | None = None
        self._closed = False

    def _counter(self, charge: Charge, start: datetime) -> str:
        return f"{self.prefix}c:{charge.budget.name}|{charge.subject}|{start.isoformat()}"

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        import redis

        if self._closed:
            raise ClosedError(f"the budget ledger on {self.url} is closed")
        try:
            return script(keys=keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self.url, "budgets", exc) from exc

    async def _arun(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """The script on the event loop's own client (made on first use: a redis.asyncio
        pool belongs to one loop)."""
        import redis

        if self._closed:
            raise ClosedError(f"the budget ledger on {self.url} is closed")
        if self._ascripts is None:
            import redis.asyncio

            from conveyor.redis_pool import connection_pool

            _, pool = connection_pool(
                self.url,
                options=("prefix",),
                socket_timeout=1.0,
                connect_timeout=1.0,
                retries=0,
                asynchronous=True,
            )
            self._aclient = redis.asyncio.Redis(connection_pool=pool)
            self._ascripts = {
                "reserve": self._aclient.register_script(_RESERVE),
                "settle": self._aclient.register_script(_SETTLE),
                "adjust": self._aclient.register_script(_ADJUST),
                "void": self._aclient.register_script(_VOID),
            }
        try:
            return await self._ascripts[name](keys=keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self.url, "budgets", exc) from exc

    def _reservation(
        self,
        charges: Sequence[Charge],
        amount: float,
        ttl_s: float,
        now: datetime,
        reservation: str | None,
    ) -> tuple[str, list[str], list[Any]]:
        """The reservation's id (``reservation``, else a new one), and the reserve script's
        keys and arguments."""
        reservation = reservation or uuid.uuid4().hex
        keys: list[str] = []
        args: list[Any] = [
            repr(float(amount)),
            repr(now.timestamp()),
            repr((now + timedelta(seconds=ttl_s)).timestamp()),
            reservation,
            len(charges),
        ]
        for charge in charges:
            start, end = period_of(charge.budget.period, now)
            keys.append(self._counter(charge, start))
            keep = _KEEP_S.get(charge.budget.period)
            until = int((end - now).total_seconds()) + keep if end is not None and keep else 0
            args += [
                repr(float(charge.budget.limit_usd)),
                charge.budget.name,
                charge.subject,
                start.isoformat(),
                until,
            ]
        keys.append(f"{self.prefix}r:{reservation}")
        return reservation, keys, args

    @staticmethod
    def _reserved(
        found: Any, reservation: str, charges: Sequence[Charge], amount: float, now: datetime
    ) -> str:
        if int(found[0]) == -1:  # voided: its caller gave up on it (see avoid)
            raise ClosedError(f"budget reservation {reservation} was voided by its caller")
        if int(found[0]) != 0:
            charge = charges[int(found[0]) - 1]
            raise exceeded(charge, float(found[1]), float(found[2]), amount, now)
        return reservation

    def reserve(
        self,
        charges: Sequence[Charge],
        amount: float,
        ttl_s: float,
        reservation: str | None = None,
    ) -> str:
        """Reserve ``amount`` USD on every charge, all or nothing; the reservation's id
        (``reservation``, else a new one). BudgetExceededError naming the first budget that
        cannot take it."""
        now = self.clock()
        reservation, keys, args = self._reservation(charges, amount, ttl_s, now, reservation)
        found = self._run(self._reserve, keys, args)
        return self._reserved(found, reservation, charges, amount, now)

    async def areserve(
        self,
        charges: Sequence[Charge],
        amount: float,
        ttl_s: float,
        reservation: str | None = None,
    ) -> str:
        """:meth:`reserve` on the event loop (what the served gateway calls)."""
        now = self.clock()
        reservation, keys, args = self._reservation(charges, amount, ttl_s, now, reservation)
        found = await self._arun("reserve", keys, args)
        return self._reserved(found, reservation, charges, amount, now)

    async def avoid(self, reservation: str, amount: float, ttl_s: float) -> None:
        """A reserve whose outcome its caller never learnt (the answer lost in a hung
        network, the script perhaps still on its way): released if it landed, and refused
        if it lands later, for ``ttl_s`` (conveyor.gateway.aftercare)."""
        keys, args = self._adjustment(reservation, 0.0, 0, amount, ttl_s)
        await self._arun("void", keys, [*args, repr(float(ttl_s))])

    def _settlement(self, reservation: str, cost: float) -> tuple[list[str], list[Any]]:
        now = self.clock()
        return [f"{self.prefix}r:{reservation}"], [
            repr(float(cost)),
            repr(now.timestamp()),
            reservation,
        ]

    def settle(self, reservation: str, cost: float) -> None:
        """Release the reservation and add ``cost`` to what each of its counters spent."""
        self._run(self._settle, *self._settlement(reservation, cost))

    async def asettle(self, reservation: str, cost: float) -> None:
        """:meth:`settle` on the event loop."""
        await self._arun("settle", *self._settlement(reservation, cost))

    def _adjustment(
        self, reservation: str, cost: float, calls: int, release: float, ttl_s: float
    ) -> tuple[list[str], list[Any]]:
        now = self.clock()
        return [f"{self.prefix}r:{reservation}"], [
            repr(float(cost)),
            repr(now.timestamp()),
            reservation,
            repr(float(release)),
            int(calls),
            repr((now + timedelta(seconds=ttl_s)).timestamp()),
        ]

    def adjust(
        self, reservation: str, cost: float, calls: int, release: float, ttl_s: float
    ) -> float:
        """Part of a reservation used (see SqlBudgets.adjust); what is left."""
        keys, args = self._adjustment(reservation, cost, calls, release, ttl_s)
        return float(self._run(self._adjust, keys, args))

    async def aadjust(
        self, reservation: str, cost: float, calls: int, release: float, ttl_s: float
    ) -> float:
        """:meth:`adjust` on the event loop."""
        keys, args = self._adjustment(reservation, cost, calls, release, ttl_s)
        return float(await self._arun("adjust", keys, args))

    def counters(self) -> list[dict[str, Any]]:
        """Every counter, newest period first (as SqlBudgets.counters)."""
        import redis

        rows = []
        try:
            keys = [
                k
                for k in self._client.scan_iter(match=f"{self.prefix}c:*", count=500)
                if not k.endswith(b":held")
            ]
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            found = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self.url, "budgets", exc) from exc
        for raw in found:
            if not raw or b"budget" not in raw:
                continue
            row = {k.decode(): v.decode() for k, v in raw.items()}
            rows.append(
                {
                    "budget": row["budget"],
                    "subject": row["subject"],
                    "period_start": row["period_start"],
                    "limit_usd": float(row["limit"]),
                    "spent_usd": round(float(row.get("spent", 0)), 9),
                    "reserved_usd": round(float(row.get("reserved", 0)), 9),
                    "calls": int(row.get("calls", 0)),
                }
            )
        rows.sort(key=lambda r: (r["budget"], r["subject"]))
        rows.sort(key=lambda r: r["period_start"], reverse=True)
        return rows

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
            self._client.connection_pool.disconnect()
            self._aclient = None  # its loop's sockets go with the loop

    async def aclose(self) -> None:
        """Close the event loop's client, then the rest."""
        if self._aclient is not None:
            await self._aclient.aclose(close_connection_pool=True)  # ours, not shared
        self.close()

    def __repr__(self) -> str:
        return f"RedisBudgets({str(self.url)!r}, prefix={self.prefix!r})"
