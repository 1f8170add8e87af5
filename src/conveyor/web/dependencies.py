"""The services a server calls on the request path, each behind a timeout and a breaker.

A request may touch three services besides the model: the prediction cache
(Redis), the rate limiter (Redis) and the metadata store (PostgreSQL, for an
API key not in memory). None of them may stall a request, and none of them
is needed to answer one, so each call:

- runs in a small thread pool of its own service (a hung service holds
  those threads only: never the event loop, the other services' pools, or the
  default pool that loads models and polls routes);
- has a tight timeout (``cache_timeout_s``, ``ratelimit_timeout_s``,
  ``store_timeout_s``), after which the request goes on without it;
- goes through a :class:`conveyor.breaker.CircuitBreaker`: after
  ``failures`` failures in a row the service is *degraded* and is not
  called at all (one trial call every ``reset_s``, doubling to 30 s), so an
  outage costs a request nothing but the fallback.

The fallbacks (chosen by the callers): the cache is bypassed; the rate
limiter falls back to per-process token buckets of the key's rate divided
by the number of workers; authentication uses the keys this process read
before (revoked and expired keys stay refused) for up to ``stale_keys_s``.
Each degraded service is the gauge ``conveyor_dependency_degraded``, an
error log line when it opens and a warning when it closes, and a detail of
the readiness body (the server stays ready: it still answers). Recovery is
automatic: the first trial call that succeeds closes the breaker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from conveyor.breaker import CircuitBreaker
from conveyor.errors import BackendUnavailableError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["Dependencies", "DependencyLimits"]

T = TypeVar("T")


class DependencyLimits(Protocol):
    """Timeouts and breaker settings: the model server's ``serving.dependencies``
    (:class:`conveyor.serving.settings.DependenciesSpec`, where each is described)."""

    @property
    def cache_timeout_s(self) -> float: ...
    @property
    def ratelimit_timeout_s(self) -> float: ...
    @property
    def store_timeout_s(self) -> float: ...
    @property
    def failures(self) -> int: ...
    @property
    def reset_s(self) -> float: ...
    @property
    def stale_keys_s(self) -> float: ...


class Dependencies:
    """One breaker and one thread pool per service, one gauge for their state."""

    def __init__(
        self,
        limits: DependencyLimits,
        registry: CollectorRegistry | None = None,
        *,
        workers: int = 1,
        threads: int = 4,
    ) -> None:
        self.limits = limits
        #: Worker processes sharing the limits (a fallback bucket gets rate / workers).
        self.workers = workers
        #: Threads per service.
        self.threads = threads
        self.breakers: dict[str, CircuitBreaker] = {}
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._gauge: Any = None
        if registry is not None:
            import os

            from prometheus_client import Gauge

            kw: dict[str, Any] = {"registry": registry}
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                kw["multiprocess_mode"] = "max"
            self._gauge = Gauge(
                "conveyor_dependency_degraded",
                "1 while a service on the request path (cache, ratelimit, store) is bypassed "
                "after failing; requests take its fallback.",
                ("dependency",),
                **kw,
            )

    def breaker(self, name: str) -> CircuitBreaker:
        """The breaker of service ``name`` (created on first use)."""
        found = self.breakers.get(name)
        if found is None:
            found = CircuitBreaker(
                name,
                failures=self.limits.failures,
                reset_s=self.limits.reset_s,
                on_change=self._changed,
            )
            self.breakers[name] = found
            if self._gauge is not None:
                self._gauge.labels(name).set(0)
        return found

    def _changed(self, breaker: CircuitBreaker) -> None:
        if self._gauge is not None:
            self._gauge.labels(breaker.name).set(1 if breaker.degraded else 0)

    def executor(self, name: str) -> ThreadPoolExecutor:
        """Service ``name``'s own threads (created on first use)."""
        found = self._executors.get(name)
        if found is None:
            found = self._executors[name] = ThreadPoolExecutor(
                self.threads, thread_name_prefix=f"conveyor-{name}"
            )
        return found

    def _allowed(self, name: str) -> CircuitBreaker:
        """Service ``name``'s breaker, or BackendUnavailableError while it is open."""
        breaker = self.breaker(name)
        if not breaker.allow():
            raise BackendUnavailableError(
                f"{name} is degraded (bypassed after failing): {breaker.last_error}",
                seam=name,
                reason="degraded",
            )
        return breaker

    async def call(self, name: str, timeout: float, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the pool, under ``name``'s breaker and ``timeout``.

        BackendUnavailableError when the breaker is open (no call made), the call
        times out or fails with it; the breaker learns of each outcome. Any other
        error (a RateLimitedError...) is the service answering: it passes through.
        """
        breaker = self._allowed(name)

        def guarded() -> T:
            # Queued while the breaker opened: do not add to the pile on a dead service.
            if breaker.state == "open":
                raise BackendUnavailableError(f"{name} is degraded", seam=name, reason="degraded")
            return fn(*args)

        loop = asyncio.get_running_loop()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for wraps the future in a task of
            # its own per call (some 20 us on every cache, limit and store call)
            async with asyncio.timeout(timeout):
                result = await loop.run_in_executor(self.executor(name), guarded)
        except TimeoutError:
            breaker.failure(f"no answer within {timeout:g} s")
            raise BackendUnavailableError(
                f"{name} did not answer within {timeout:g} s", seam=name, reason="timeout"
            ) from None
        except BackendUnavailableError as exc:
            if exc.context.get("reason") != "degraded":
                breaker.failure(exc)
            raise
        except Exception:  # the service answered, with an error of its own (a 429...)
            breaker.success()
            raise
        breaker.success()
        return result

    async def acall(
        self, name: str, timeout: float, fn: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        """``await fn(*args)`` on the event loop, under ``name``'s breaker and ``timeout``:
        :meth:`call` for a client that is asynchronous itself (no thread to hop to)."""
        breaker = self._allowed(name)
        try:
            async with asyncio.timeout(timeout):
                result = await fn(*args)
        except TimeoutError:
            breaker.failure(f"no answer within {timeout:g} s")
            raise BackendUnavailableError(
                f"{name} did not answer within {timeout:g} s", seam=name, reason="timeout"
            ) from None
        except BackendUnavailableError as exc:
            breaker.failure(exc)
            raise
        except Exception:  # the service answered, with an error of its own
            breaker.success()
            raise
        breaker.success()
        return result

    def health(self) -> dict[str, Any]:
        """The degraded services, for the readiness body (empty: all answer)."""
        return {n: b.to_dict() for n, b in sorted(self.breakers.items()) if b.degraded}

    def close(self) -> None:
        executors, self._executors = list(self._executors.values()), {}
        for executor in executors:
            executor.shutdown(wait=False, cancel_futures=True)
