"""Rate limits and budgets of tool calls, per key, user and conversation.

::

    mcp:
      limits: {key: 600, user: 120, conversation: 60}     # calls a minute
      budgets:
        - {name: conversation-calls, scope: conversation, period: day, max_calls: 50}
        - {name: user-spend, scope: user, period: month, max_cost: 10, tools: ["search__*"]}
      budgets_url: redis://127.0.0.1:6379/0               # else the project's store

**Limits** are token buckets on the project's rate-limit seam (per process, or Redis across
workers): each subject may make ``N`` calls a minute, bursting up to ``N``. A call over
one is refused with ``rate_limited``, naming the limit and when to retry.

**Budgets** count calls (``max_calls``) or the cost of the tools called (``max_cost``, in
the unit of ``mcp.tools.X.cost``) per subject of their scope, per UTC day, month or in
total, in the LLM gateway's budget ledger (:mod:`conveyor.gateway.budgets`: a reservation
before the call, atomic in the store or in Redis, settled after it), so they hold under
concurrency across workers: 50 concurrent calls against a budget of 10 make exactly 10. A
call a budget cannot take is refused with ``budget_exceeded`` naming the budget, its scope
and subject, limit, used, and when it resets. A call the gateway refused, or that never
reached its server, is not counted.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from conveyor.agents.gateway import Caller

__all__ = ["CallBudgetSpec", "CallBudgets", "CallLimits", "CallLimitsSpec"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class CallLimitsSpec(BaseModel):
    """``mcp.limits``: calls a minute per key, user and conversation (None: no limit)."""

    model_config = _STRICT

    key: int | None = Field(None, ge=1, description="Calls a minute per API key.")
    user: int | None = Field(None, ge=1, description="Calls a minute per user (x-conveyor-user).")
    conversation: int | None = Field(
        None, ge=1, description="Calls a minute per conversation (x-conveyor-conversation)."
    )

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.key, self.user, self.conversation))


class CallBudgetSpec(BaseModel):
    """One budget of ``mcp.budgets``."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=64, description="How refusals name it.")
    scope: Literal["key", "user", "conversation", "global"] = Field(
        description="What it counts per: the key, the user, the conversation, or all calls."
    )
    subject: str | None = Field(None, description="Only this key, user or conversation.")
    period: Literal["day", "month", "total"] = Field("day", description="When it resets.")
    max_calls: int | None = Field(None, ge=1, description="Calls it allows in a period.")
    max_cost: float | None = Field(
        None, gt=0, description="Cost it allows in a period (the tools' mcp.tools.X.cost)."
    )
    tools: list[str] = Field(
        default_factory=lambda: ["*"], description="Globs of the tools it counts."
    )

    @model_validator(mode="after")
    def _one_limit(self) -> CallBudgetSpec:
        if (self.max_calls is None) == (self.max_cost is None):
            raise ValueError(f"budget {self.name!r}: set max_calls or max_cost (one of them)")
        return self

    def counts(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, p) for p in self.tools)


class CallLimits:
    """Token buckets of calls a minute on the rate-limit seam."""

    def __init__(self, spec: CallLimitsSpec, limiter: Any) -> None:
        self.spec = spec
        self.limiter = limiter

    def take(self, caller: Caller) -> None:
        """Take one call of each limit that applies; RateLimitedError naming the first
        that has none left."""
        for scope in ("key", "user", "conversation"):
            per_minute = getattr(self.spec, scope)
            subject = getattr(caller, scope)
            if per_minute is None or subject is None:
                continue
            self.limiter.take(
                f"mcp:{scope}:{subject}",
                per_minute / 60.0,
                per_minute,
                unit=f"tool calls of {scope} {subject!r} (mcp.limits.{scope}: {per_minute}/min)",
            )


class CallBudgets:
    """Reservations of tool calls against ``mcp.budgets`` in a budget ledger."""

    def __init__(self, budgets: Sequence[CallBudgetSpec], ledger: Any, ttl_s: float = 600) -> None:
        from conveyor.gateway.settings import BudgetSpec

        self.ledger = ledger
        self.ttl_s = ttl_s
        # the ledger's budgets: the same names, the limit in calls or cost units
        self._specs = [
            (
                spec,
                BudgetSpec(
                    name=f"mcp-{spec.name}",
                    scope=spec.scope,
                    subject=spec.subject,
                    period=spec.period,
                    limit_usd=_limit(spec),
                ),
            )
            for spec in budgets
        ]

    async def _call(self, name: str, *args: Any) -> Any:
        method = getattr(self.ledger, "a" + name, None)
        if method is not None:  # leases (in memory) or Redis (the event loop's client)
            return await method(*args)
        return await asyncio.to_thread(getattr(self.ledger, name), *args)

    async def reserve(self, tool: str, cost: float, caller: Caller) -> list[tuple[str, float]]:
        """Reserve the call on every budget that counts it, all or nothing: the
        reservations (to settle). ToolError ``budget_exceeded`` naming the one that
        cannot take it."""
        from conveyor.agents.gateway import ToolError
        from conveyor.errors import BudgetExceededError
        from conveyor.gateway.budgets import Charge

        held: list[tuple[str, float]] = []
        for spec, ledger_spec in self._specs:
            if not spec.counts(tool):
                continue
            subject = "*" if spec.scope == "global" else getattr(caller, spec.scope)
            if subject is None or (spec.subject is not None and subject != spec.subject):
                continue
            amount = 1.0 if spec.max_calls is not None else cost
            if amount <= 0:
                continue
            charges = [Charge(ledger_spec, subject)]
            try:
                held.append((await self._call("reserve", charges, amount, self.ttl_s), amount))
            except BudgetExceededError as exc:
                for reservation, _ in held:
                    await self._call("settle", reservation, 0.0)
                unit = "calls" if spec.max_calls is not None else "cost"
                limit = spec.max_calls if spec.max_calls is not None else spec.max_cost
                used = exc.context.get("spent_usd", 0.0) + exc.context.get("reserved_usd", 0.0)
                resets = exc.context.get("resets_at")
                raise ToolError(
                    "budget_exceeded",
                    f"budget {spec.name!r} ({spec.scope} {subject!r}, per {spec.period}) is "
                    f"used up: {_fmt(used)} of {_fmt(limit)} {unit}; "
                    + (f"it resets at {resets}" if resets else "it never resets"),
                    budget=spec.name,
                    scope=spec.scope,
                    subject=subject,
                    limit=limit,
                    used=round(used, 9),
                    unit=unit,
                    resets_at=resets,
                ) from None
        return held

    async def settle(self, held: list[tuple[str, float]], counted: bool) -> None:
        """Settle the reservations: what they reserved when the call reached its server
        (``counted``), nothing when it did not."""
        for reservation, amount in held:
            await self._call("settle", reservation, amount if counted else 0.0)

    async def drain(self) -> None:
        """Leases written and given back, the ledger's loop client closed (at stop)."""
        ledger: Any = self.ledger
        drain = getattr(ledger, "drain", None)
        if drain is not None:
            await drain()
            ledger = ledger.backing
        aclose = getattr(ledger, "aclose", None)
        if aclose is not None:
            await aclose()


def _limit(spec: CallBudgetSpec) -> float:
    limit = spec.max_calls if spec.max_calls is not None else spec.max_cost
    assert limit is not None  # the spec's validator requires one
    return float(limit)


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"
