"""Per-key limits on the gateway: requests and tokens per minute, and ``max_tokens``.

::

    gateway:
      limits:
        default: {rpm: 600, tpm: 200000, max_tokens: 512, max_tokens_ceiling: 4096}
        keys:
          batch-jobs: {rpm: 60, tpm: 2000000, max_tokens_ceiling: 16384}

- **rpm**: a token bucket per key refilled at ``rpm / 60`` per second, holding at most
  ``rpm``; each call takes one.
- **tpm**: the same for tokens; a call takes its prompt (counted as
  :mod:`conveyor.gateway.costs` does) plus the completion it may produce (``max_tokens``
  times ``n``). A call larger than the whole minute's allowance is a 400.
- **max_tokens**: given to a request that names neither ``max_tokens`` nor
  ``max_completion_tokens``; **max_tokens_ceiling**: a request asking for more is refused
  with 400 (``param: max_tokens``), never silently cut.

The buckets live on the server's rate-limit seam (``backends.ratelimit``: per process, or
Redis shared by every worker and server). A limit reached is a 429 with ``Retry-After``. If
Redis does not answer, the call goes on unlimited and the failure is logged: a limit must
not take the gateway down with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from conveyor.errors import BackendUnavailableError, InvalidInputError
from conveyor.gateway.costs import prompt_tokens, requested_output

if TYPE_CHECKING:
    from conveyor.gateway.settings import GatewaySpec
    from conveyor.gateway.turn import Outcome, Proceed, Turn

__all__ = ["LimitsStage"]

log = logging.getLogger("conveyor.gateway")


class LimitsStage:
    """Applies ``gateway.limits`` to each call (see the module)."""

    name = "limits"

    def __init__(self, spec: GatewaySpec, limiter: Any) -> None:
        self.spec = spec
        self.limiter = limiter

    async def _take(self, bucket: str, per_minute: int, amount: float, unit: str) -> None:
        take = functools.partial(
            self.limiter.take, bucket, per_minute / 60.0, per_minute, amount=amount, unit=unit
        )
        try:
            if getattr(self.limiter, "local", False):
                take()
            else:
                await asyncio.to_thread(take)
        except BackendUnavailableError as exc:
            log.warning("LLM %s limit not applied: %s", unit, exc.message)

    async def __call__(self, turn: Turn, proceed: Proceed) -> Outcome:
        limits = self.spec.limits.of(turn.key)
        body = turn.body
        if turn.endpoint == "chat":
            asked = body.get("max_completion_tokens") or body.get("max_tokens")
            if asked is None and limits.max_tokens is not None:
                body["max_tokens"] = limits.max_tokens
            ceiling = limits.max_tokens_ceiling
            if asked is not None and ceiling is not None and asked > ceiling:
                name = (
                    "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"
                )
                raise InvalidInputError(
                    f"'{name}' is at most {ceiling} for this key, got {asked}", field=name
                )
        who = turn.key or "anonymous"
        tokens = 0
        if limits.tpm is not None:  # checked before anything is taken
            output = requested_output(body, 0) if turn.endpoint == "chat" else 0
            tokens = prompt_tokens(body, self.spec.counter(turn.record.model)) + output
            if tokens > limits.tpm:
                raise InvalidInputError(
                    f"this call may use {tokens} tokens (prompt and max_tokens), more than "
                    f"the key's {limits.tpm} tokens per minute",
                    field="max_tokens",
                )
        if limits.rpm is not None:
            await self._take(f"llm:rpm:{who}", limits.rpm, 1.0, "requests")
        if limits.tpm is not None:
            await self._take(f"llm:tpm:{who}", limits.tpm, float(tokens), "tokens")
        return await proceed(turn)
