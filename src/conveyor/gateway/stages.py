"""Which stages a gateway runs around its upstream calls, in which order (see
:mod:`conveyor.gateway.turn` for what a stage is).

The order, outermost first, and why:

1. **limits**: requests and tokens per minute, ``max_tokens`` defaults and ceilings per
   key. The cheapest refusals come first and cost nothing else.
2. **guardrails**: input checks (injection, PII redacted into pseudonyms, policy) before
   anything reads the prompt, so the caches key and the costs count what is sent
   upstream; output checks on the way back see every answer, a cached one included, and
   restore the pseudonyms.
3. **caches**: exact, then semantic; a hit answers without an upstream call and is
   charged nothing.
4. **budgets**: the call's maximum cost reserved before the upstream call, what it cost
   settled after it (a cancelled stream: what was generated).

A section left out of the spec builds no stage: a gateway with none calls the router
directly.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.gateway.settings import GatewaySpec
    from conveyor.gateway.turn import Endpoint, Stage
    from conveyor.web.app import AppContext

__all__ = ["build"]


def build(context: AppContext, spec: GatewaySpec) -> dict[Endpoint, list[Stage]]:
    """The stages of each endpoint, outermost first."""
    chat: list[Stage] = []
    embeddings: list[Stage] = []
    # 1. limits
    if spec.limits.any:
        from conveyor.gateway.limits import LimitsStage

        limits = LimitsStage(spec, context.project.backend("ratelimit"))
        chat.append(limits)
        embeddings.append(limits)
    # 2. guardrails (chat only)
    if spec.guardrails.any:
        from conveyor.gateway.guard import GuardStage

        chat.append(GuardStage(spec.guardrails, context))
    # 3. caches
    if spec.cache.any:
        from conveyor.gateway.cache import CacheStage

        semantic = None
        if spec.cache.semantic is not None:
            from conveyor.gateway.semantic import SemanticIndex

            # the encoder is RAG's (a service: the gateway imports no RAG module)
            encoder: Any = context.project.service("embedders").open(spec.cache.semantic.embedding)
            semantic = SemanticIndex(spec.cache.semantic, encoder.embed)
        chat.append(
            CacheStage(
                spec.cache,
                context.project.backend("cache"),
                context.metrics.registry,
                semantic,
            )
        )
    # 4. budgets (and costs: a price alone prices every call)
    if spec.budgets or spec.prices:
        from conveyor.gateway.aftercare import Aftercare
        from conveyor.gateway.budgets import BudgetStage, ledger_of

        deps = context.dependencies
        run: Any = None
        arun: Any = None
        if deps is not None:
            timeout = deps.limits.store_timeout_s

            async def run(fn: Any, *args: Any) -> Any:  # the store's breaker and threads
                return await deps.call("store", timeout, fn, *args)

            async def arun(fn: Any, *args: Any) -> Any:  # Redis: its own breaker, no thread
                return await deps.acall("budgets", timeout, fn, *args)

        ledger: Any = ledger_of(context.project, spec)
        after = Aftercare(spec.reservation_ttl_s)  # settlements, reserves given up on
        if spec.budget_lease > 0:  # slices spent in memory (conveyor.gateway.leases)
            from conveyor.gateway.leases import LeasedLedger

            backing, sync_run, async_run = ledger, run, arun

            async def through(name: str, *args: Any) -> Any:  # the ledger's breaker
                if name == "reserve":  # a slice: released if it lands after a timeout
                    charges, amount, ttl_s = args
                    return await after.reserve(
                        backing,
                        charges,
                        amount,
                        ttl_s,
                        run=sync_run,
                        arun=async_run,
                        release=lambda r: through("adjust", r, 0.0, 0, amount, ttl_s),
                    )
                method = getattr(backing, "a" + name, None)
                if method is not None:
                    return await (async_run(method, *args) if async_run else method(*args))
                fn = getattr(backing, name)
                return await (sync_run(fn, *args) if sync_run else asyncio.to_thread(fn, *args))

            ledger = LeasedLedger(backing, spec.budget_lease, spec.reservation_ttl_s, call=through)
            run = arun = None  # a leased reservation is in memory: no breaker around it
        budgets = BudgetStage(spec, ledger, run, arun, after)
        chat.append(budgets)
        embeddings.append(budgets)
    return {"chat": chat, "embeddings": embeddings}
