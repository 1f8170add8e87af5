"""The request path's services: each call under a timeout and a breaker, in threads of its
own service, so one hung service holds its own threads and nothing else."""

from __future__ import annotations

import asyncio
import threading

import pytest

from conveyor.errors import BackendUnavailableError, RateLimitedError
from conveyor.serving.settings import DependenciesSpec
from conveyor.web.dependencies import Dependencies


def test_a_hung_service_holds_only_its_own_threads() -> None:
    async def scenario() -> None:
        deps = Dependencies(DependenciesSpec(failures=1, reset_s=0.01), threads=2)
        hung = threading.Event()
        try:
            for _ in range(2):  # each call times out and leaves a thread waiting
                with pytest.raises(BackendUnavailableError) as caught:
                    await deps.call("store", 0.05, hung.wait)
                assert caught.value.context["reason"] == "timeout"
                await asyncio.sleep(0.02)  # past the reset: the next call is a trial
            # Both store threads are held; the cache still answers from its own.
            assert await deps.call("cache", 2.0, lambda: "answered") == "answered"
            assert set(deps.health()) == {"store"}
        finally:
            hung.set()
            deps.close()

    asyncio.run(scenario())


def test_an_open_breaker_makes_no_call_until_its_trial() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise BackendUnavailableError("refused", seam="cache")

    async def scenario() -> None:
        deps = Dependencies(DependenciesSpec(failures=2, reset_s=60))
        try:
            for _ in range(5):
                with pytest.raises(BackendUnavailableError):
                    await deps.call("cache", 1.0, down)
            assert len(calls) == 2  # the two failures that opened it; then no call
            assert deps.health()["cache"]["state"] == "open"
            assert deps.breaker("cache").short_circuited == 3
        finally:
            deps.close()

    asyncio.run(scenario())


def test_an_answer_that_is_an_error_is_not_a_failure() -> None:
    """A RateLimitedError is the limiter answering: it passes through, the breaker stays
    closed."""

    def refuse() -> None:
        raise RateLimitedError("over budget", retry_after=1.0)

    async def scenario() -> None:
        deps = Dependencies(DependenciesSpec(failures=1))
        try:
            for _ in range(3):
                with pytest.raises(RateLimitedError):
                    await deps.call("ratelimit", 1.0, refuse)
            assert deps.breaker("ratelimit").state == "closed" and deps.health() == {}
        finally:
            deps.close()

    asyncio.run(scenario())
