"""Health probes: a deployment whose circuit breaker opened is tried again in the
background, so it comes back without a user's request being the trial.

::

    gateway:
      breaker: {failures: 3, reset_s: 5}
      probe: {kind: chat, timeout_s: 5}      # or models, or none

When a deployment's breaker opens, the router starts one probe task for it. At the
breaker's reset time the task takes the breaker's one trial call (so requests keep going
to the other deployments meanwhile) and calls the deployment:

- ``chat``: a one-token chat completion (``max_tokens: 1``, the message ``ping``)
  through the deployment's provider, whatever its kind;
- ``models``: the provider's model list (``GET /models`` of an OpenAI-compatible
  upstream; a provider without one is probed with ``chat``);
- ``none``: no probe: a user request is the trial, as without probes.

An answer (a 4xx or a 429 included: the upstream is up) closes the breaker; a connection
refused, a timeout, a 5xx or garbage opens it again for twice as long (up to
``breaker.max_reset_s``), and the task waits for that and probes again, until the
deployment answers or leaves the routing. Each probe is counted in
``conveyor_llm_probes{model, result}`` (``ok``, ``failed``) and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import asyncio

    from conveyor.breaker import CircuitBreaker
    from conveyor.gateway.router import Router

__all__ = ["ProbeSpec", "Prober"]

log = logging.getLogger("conveyor.gateway")

#: A probe that finds the breaker's trial taken (a request is it) looks again this soon.
_BUSY_WAIT_S = 0.05


class ProbeSpec(BaseModel):
    """How a deployment whose breaker is open is tried again (see the module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["chat", "models", "none"] = Field(
        "chat",
        description="chat: a one-token chat completion; models: the provider's model list; "
        "none: no probe (a user request is the breaker's trial).",
    )
    timeout_s: float = Field(
        5.0, gt=0, le=600, description="Seconds a probe may take (then it failed)."
    )


class Prober:
    """The probe tasks of one router's deployments (see the module)."""

    def __init__(
        self,
        router: Router,
        spec: ProbeSpec,
        on_probe: Callable[[str, str], None] | None = None,
    ) -> None:
        self.router = router
        self.spec = spec
        self.on_probe = on_probe
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def changed(self, deployment: str, breaker: CircuitBreaker) -> None:
        """A breaker opened or closed (its ``on_change``): probe an open one."""
        if breaker.state != "open" or self.spec.kind == "none":
            return
        running = self._tasks.get(deployment)
        if running is not None and not running.done():
            return
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # opened outside the event loop: a request is the trial
            return
        task = loop.create_task(self._probe_until_closed(deployment, breaker))
        self._tasks[deployment] = task
        task.add_done_callback(lambda _: self._tasks.pop(deployment, None))

    async def aclose(self) -> None:
        import asyncio

        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _probe_until_closed(self, deployment: str, breaker: CircuitBreaker) -> None:
        import asyncio

        while breaker.state != "closed" and self.router.tracks(deployment, breaker):
            await asyncio.sleep(max(breaker.retry_in(), _BUSY_WAIT_S))
            state: str = breaker.state  # another call may have changed it meanwhile
            if state == "closed":
                return
            if state == "half_open" or not breaker.allow():
                continue  # a request took the trial: see how it went
            ok = await self.probe(deployment)
            if ok:
                breaker.success()
            else:
                breaker.failure(f"health probe of {deployment} failed")

    async def probe(self, deployment: str) -> bool:
        """One probe of ``deployment``: whether its upstream answered (see the module)."""
        import asyncio

        from conveyor.gateway.types import UpstreamError

        started = time.perf_counter()
        result, detail = "ok", ""
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                await self._call(deployment)
        except UpstreamError as exc:
            if exc.kind in ("bad_request", "rate_limited"):
                detail = f" (answered {exc.status})"
            else:
                result, detail = "failed", f": {exc.kind}: {exc.message}"
        except TimeoutError:
            result, detail = "failed", f": no answer within {self.spec.timeout_s:g} s"
        except Exception as exc:  # a provider that cannot start, a bug: not healthy
            result, detail = "failed", f": {type(exc).__name__}: {exc}"
        took = (time.perf_counter() - started) * 1000.0
        log.log(
            logging.INFO if result == "ok" else logging.WARNING,
            "health probe (%s) of LLM deployment %s: %s in %.1f ms%s",
            self.spec.kind,
            deployment,
            result,
            took,
            detail,
        )
        if self.on_probe is not None:
            try:
                self.on_probe(deployment, result)
            except Exception:
                log.exception("counting a health probe failed")
        return result == "ok"

    async def _call(self, name: str) -> Any:
        deployment = self.router.spec.deployment(name)
        provider = self.router.provider(deployment.provider)
        if self.spec.kind == "models":
            models = getattr(provider, "models", None)
            if models is not None:
                return await models(deployment)
        body = {
            "model": deployment.model,
            "messages": [{"role": "user", "content": "ping"}],
            "max_tokens": 1,
        }
        return await provider.chat(body, deployment)
