"""A budgeted call that gives up on its reserve (the ledger slower than the server's timeout,
the client gone) leaves no reservation holding the budget, and a settlement that failed is
tried again until the ledger answers: the real SQLite, PostgreSQL and Redis ledgers, behind
the server's own timeouts and breakers (conveyor.web.dependencies), the budget stage called
as the gateway calls it.

Found by the served test of fifty concurrent calls on a loaded machine: a reserve that timed
out answered 503 but landed a moment later, and its reservation held the budget for
``reservation_ttl_s`` (ten minutes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gateway_api_support import LEDGER_PARAMS, ledger_on

from conveyor.errors import BackendUnavailableError, BudgetExceededError
from conveyor.gateway.budgets import BudgetStage, Ledger, SqlBudgets
from conveyor.gateway.ledger_redis import RedisBudgets
from conveyor.gateway.router import CallRecord
from conveyor.gateway.settings import GatewaySpec
from conveyor.gateway.turn import Turn
from conveyor.serving.settings import DependenciesSpec
from conveyor.testing.services import redis_prefix
from conveyor.web.dependencies import Dependencies

TIMEOUT_S = DependenciesSpec().store_timeout_s
SLOW_S = 1.0  # the ledger's delay, against the server's 0.5 s store timeout (its default)


class SlowSql(SqlBudgets):
    """The store's ledger, ``delay`` s late to reserve; ``settle_fails`` times failing to
    settle."""

    delay = 0.0
    settle_fails = 0

    def reserve(self, *args: Any, **kwargs: Any) -> str:
        time.sleep(self.delay)
        return super().reserve(*args, **kwargs)

    def settle(self, reservation: str, cost: float) -> None:
        if self.settle_fails > 0:
            self.settle_fails -= 1
            raise BackendUnavailableError("the store is away", seam="store")
        super().settle(reservation, cost)


class SlowRedis(RedisBudgets):
    """Redis's ledger (awaited on the event loop), its answer to a reserve ``delay`` s late
    (the reservation made: a reply lost in a slow network)."""

    delay = 0.0
    settle_fails = 0

    async def areserve(self, *args: Any, **kwargs: Any) -> str:
        found = await super().areserve(*args, **kwargs)
        await asyncio.sleep(self.delay)
        return found

    async def asettle(self, reservation: str, cost: float) -> None:
        if self.settle_fails > 0:
            self.settle_fails -= 1
            raise BackendUnavailableError("redis is away", seam="budgets")
        await super().asettle(reservation, cost)


@pytest.fixture(params=LEDGER_PARAMS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with ledger_on(request.param, tmp_path, sql=SlowSql, redis=SlowRedis) as found:
        yield found


def _stage(ledger: Ledger) -> tuple[BudgetStage, Dependencies]:
    """The budget stage as the served gateway builds it: ledger calls under the server's
    breakers and store timeout (conveyor.gateway.stages)."""
    spec = GatewaySpec.model_validate(
        {
            "providers": {"fake": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "deployments": {"a": {"provider": "fake", "model": "gpt-a"}},
            "prices": {"a": {"input": 1000.0, "output": 1000.0}},  # $0.001 a token
            "budgets": [{"name": "daily", "scope": "key", "limit_usd": 1.0}],
        }
    )
    deps = Dependencies(DependenciesSpec(failures=100))

    async def run(fn: Any, *args: Any) -> Any:
        return await deps.call("store", TIMEOUT_S, fn, *args)

    async def arun(fn: Any, *args: Any) -> Any:
        return await deps.acall("budgets", TIMEOUT_S, fn, *args)

    return BudgetStage(spec, ledger, run, arun), deps


def _drive(
    ledger: Ledger,
    main: Callable[[Any], Awaitable[None]],
    built: tuple[Any, Dependencies] | None = None,
) -> None:
    """``main(stage)`` on an event loop of its own, then the stage drained and its
    dependencies' threads closed (``built``: a stage and its dependencies; default
    :func:`_stage`)."""
    stage, deps = built or _stage(ledger)

    async def run() -> None:
        await main(stage)
        await stage.drain()

    try:
        asyncio.run(run())
    finally:
        deps.close()


def _turn() -> Turn:
    return Turn(
        call=None,  # type: ignore[arg-type]  # the stage reads no HTTP
        endpoint="chat",
        body={"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10},
        record=CallRecord(model="a", deployment="a"),
        key="app",
    )


async def _answer(turn: Turn) -> dict[str, Any]:
    return {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}}


def _counter(ledger: Ledger) -> dict[str, Any]:
    (found,) = ledger.counters()
    return found


async def _until(check: Any, timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < end, f"gave up after {timeout} s"
        await asyncio.sleep(0.02)
    return found


def test_a_reserve_that_lands_after_its_call_timed_out_is_released(ledger: Any) -> None:
    async def main(stage: Any) -> None:
        await stage(_turn(), _answer)  # the counter exists: one call settled
        first = await _until(lambda: _counter(ledger)["calls"] == 1 and _counter(ledger))
        ledger.delay = SLOW_S
        with pytest.raises(BackendUnavailableError, match="did not answer within"):
            await stage(_turn(), _answer)
        ledger.delay = 0.0
        # the reserve lands SLOW_S after its call gave up, then is given back, uncounted
        await asyncio.sleep(SLOW_S)
        settled = await _until(lambda: _counter(ledger)["reserved_usd"] == 0 and _counter(ledger))
        assert settled["calls"] == 1 and settled["spent_usd"] == pytest.approx(first["spent_usd"])

    _drive(ledger, main)


def test_a_call_cancelled_while_it_reserves_leaves_nothing_reserved(ledger: Any) -> None:
    async def main(stage: Any) -> None:
        await stage(_turn(), _answer)  # the counter exists: one call settled
        await _until(lambda: _counter(ledger)["calls"] == 1)
        ledger.delay = 0.25  # inside the timeout: the client is what goes away
        call = asyncio.ensure_future(stage(_turn(), _answer))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.4)  # past the reserve's delay: it has landed
        counter = await _until(lambda: _counter(ledger)["reserved_usd"] == 0 and _counter(ledger))
        assert counter["calls"] == 1 and counter["spent_usd"] == pytest.approx(0.011)

    _drive(ledger, main)


def test_a_settlement_that_failed_is_tried_again_until_the_ledger_answers(ledger: Any) -> None:
    async def main(stage: Any) -> None:
        ledger.settle_fails = 2  # the call's settlement fails twice, then lands
        await stage(_turn(), _answer)
        assert _counter(ledger)["reserved_usd"] > 0  # held while the ledger is away
        counter = await _until(lambda: _counter(ledger)["calls"] == 1 and _counter(ledger))
        assert ledger.settle_fails == 0
        assert counter["reserved_usd"] == 0 and counter["spent_usd"] == pytest.approx(0.011)

    _drive(ledger, main)


def test_a_failed_call_answers_at_once_while_its_settlement_waits_for_the_ledger(
    ledger: Any,
) -> None:
    """The upstream failed and the ledger is away: the error goes back to the caller
    without waiting for the settlement's retries."""

    async def upstream_down(turn: Turn) -> Any:
        raise RuntimeError("upstream down")

    async def main(stage: Any) -> None:
        ledger.settle_fails = 2
        with pytest.raises(RuntimeError, match="upstream down"):
            # hung for the settlement's retries before: ten minutes, at most
            await asyncio.wait_for(stage(_turn(), upstream_down), timeout=SLOW_S)
        assert stage._after._tasks  # settling in the background
        counter = await _until(lambda: _counter(ledger)["calls"] == 1 and _counter(ledger))
        assert counter["reserved_usd"] == 0 and counter["spent_usd"] == 0

    _drive(ledger, main)


def test_a_refused_reserve_leaves_no_work_behind(ledger: Any) -> None:
    """A budget refusal ends the reserve at once: nothing is released or retried."""

    async def main(stage: Any) -> None:
        turn = _turn()
        turn.body["max_tokens"] = 5000  # more than the $1 budget can hold
        with pytest.raises(BudgetExceededError):
            await stage(turn, _answer)
        assert not stage._after._tasks

    _drive(ledger, main)


def test_drain_stops_waiting_for_a_ledger_that_never_comes_back(ledger: Any) -> None:
    async def main(stage: Any) -> None:
        ledger.settle_fails = 1_000  # away for good
        await stage(_turn(), _answer)
        await asyncio.sleep(0.1)  # the first try failed: the next one waits 0.5 s
        await stage.drain()  # one last try at once, then done
        assert not stage._after._tasks

    _drive(ledger, main)
    # two tries: the first, and drain's at once (not cancelled in its pause, nor retried
    # for the reservation's ten minutes)
    assert ledger.settle_fails == 1_000 - 2


def test_a_lease_slice_that_lands_after_its_call_timed_out_is_released(
    ledger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gateway.budget_lease: the slice a worker reserves in the ledger is given back too."""
    from conveyor.gateway import budgets as budgets_module
    from conveyor.gateway.stages import build

    monkeypatch.setattr(budgets_module, "ledger_of", lambda project, spec: ledger)
    spec = _stage(ledger)[0].spec.model_copy(update={"budget_lease": 0.3})
    deps = Dependencies(DependenciesSpec(failures=100))
    context: Any = SimpleNamespace(dependencies=deps, project=None)
    (stage,) = build(context, spec)["chat"]
    assert "LeasedLedger" in type(stage.ledger).__name__  # type: ignore[attr-defined]

    async def main(stage: Any) -> None:
        ledger.delay = SLOW_S
        with pytest.raises(BackendUnavailableError, match="did not answer within"):
            await stage(_turn(), _answer)
        ledger.delay = 0.0
        await asyncio.sleep(SLOW_S)  # the slice (0.3 of the $1) has landed by now
        counter = await _until(lambda: ledger.counters() and _counter(ledger))
        counter = await _until(lambda: _counter(ledger)["reserved_usd"] == 0 and _counter(ledger))
        assert counter["calls"] == 0 and counter["spent_usd"] == 0

    _drive(ledger, main, (stage, deps))


@pytest.mark.redis
def test_a_reserve_sent_into_a_hung_redis_lands_on_restore_and_is_released() -> None:
    """Operator's test: Redis hung (its proxy SIGSTOPped) while a call reserves. The client
    gives up (its socket timeout), but the script it sent waits in the proxy and runs when
    Redis comes back: that reservation is voided, never left holding the budget."""
    from conveyor.backends import BackendURL
    from conveyor.testing.tcp_proxy import TcpProxy

    with redis_prefix() as url, TcpProxy("127.0.0.1", 6379) as proxy:
        through = BackendURL.parse(url).with_(port=proxy.port).render(hide_password=False)
        ledger = RedisBudgets(through)
        direct = RedisBudgets(url)  # what the budget holds, read past the proxy

        async def main(stage: Any) -> None:
            await stage(_turn(), _answer)  # one call settled: the counter exists
            await _until(lambda: _counter(direct)["calls"] == 1)
            proxy.hang()
            with pytest.raises(BackendUnavailableError):
                await stage(_turn(), _answer)
            await asyncio.sleep(1.5)  # past the client's 1 s socket timeout
            proxy.restore()  # the script sent into the hang reaches Redis now
            counter = await _until(
                lambda: _counter(direct)["reserved_usd"] == 0 and _counter(direct), timeout=15
            )
            assert counter["calls"] == 1 and counter["spent_usd"] == pytest.approx(0.011)

        try:
            _drive(ledger, main)
        finally:
            ledger.close()
            direct.close()


@pytest.mark.redis
def test_a_voided_redis_reservation_is_released_and_never_taken_after() -> None:
    """RedisBudgets.avoid, in either order with the reserve it voids: released if it had
    landed (no call counted), refused if it lands after; other reservations untouched."""
    from conveyor.errors import ClosedError
    from conveyor.gateway.budgets import Charge
    from conveyor.gateway.settings import BudgetSpec

    charge = Charge(BudgetSpec(name="b", scope="key", limit_usd=1.0), "app")
    with redis_prefix() as url:
        budgets = RedisBudgets(url)

        async def main() -> None:
            kept = await budgets.areserve([charge], 0.25, 60)
            await budgets.areserve([charge], 0.25, 60, reservation="landed-first")
            await budgets.avoid("landed-first", 0.25, 60)  # released
            await budgets.avoid("lands-after", 0.25, 60)  # nothing yet: voided ahead
            with pytest.raises(ClosedError, match="voided"):
                await budgets.areserve([charge], 0.25, 60, reservation="lands-after")
            (counter,) = budgets.counters()
            assert counter["reserved_usd"] == pytest.approx(0.25) and counter["calls"] == 0
            await budgets.asettle(kept, 0.1)
            await budgets.aclose()

        try:
            asyncio.run(main())
        finally:
            budgets.close()
        (counter,) = RedisBudgets(url).counters()
        assert counter["reserved_usd"] == 0 and counter["calls"] == 1
        assert counter["spent_usd"] == pytest.approx(0.1)
