"""Budgets hold under concurrency (SQLite, PostgreSQL and Redis ledgers through one contract,
real threads on one ledger),
reservations settle and expire, periods reset; through the served gateway with the openai
client: a budget trips naming itself, its limit and its reset; 50 concurrent calls never
overshoot; a stream stopped early is charged for what was generated; per-key rpm, tpm and
max_tokens limits answer 429 / 400 in OpenAI's shape."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from gateway_api_support import LEDGER_PARAMS, calls, gateway_spec, ledger_on, served_gateway

from conveyor.errors import BudgetExceededError
from conveyor.gateway.budgets import Charge, Ledger, SqlBudgets, period_of
from conveyor.gateway.costs import cost_of
from conveyor.gateway.ledger_redis import RedisBudgets
from conveyor.gateway.settings import BudgetSpec, PriceSpec
from conveyor.gateway.types import Usage
from conveyor.project import Project
from conveyor.testing.services import redis_prefix


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=LEDGER_PARAMS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Ledger, Clock]]:
    """The contract's ledgers: SQL on an SQLite file and a PostgreSQL schema, and Redis
    under a fresh prefix."""
    clock = Clock()
    with ledger_on(request.param, tmp_path, clock=clock) as found:
        yield found, clock


def _budget(limit: float, period: str = "day") -> Charge:
    return Charge(BudgetSpec(name="b", scope="key", period=period, limit_usd=limit), "app")


def test_concurrent_reservations_never_pass_the_limit(ledger: tuple[Ledger, Clock]) -> None:
    budgets, _ = ledger
    charge = _budget(10.5)
    taken: list[str] = []
    refused: list[BudgetExceededError] = []
    failed: list[BaseException] = []
    barrier = threading.Barrier(50)

    def reserve() -> None:
        barrier.wait()
        try:
            taken.append(budgets.reserve([charge], 1.0, 60))
        except BudgetExceededError as exc:
            refused.append(exc)
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=reserve) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    assert len(taken) == 10 and len(refused) == 40
    for reservation in taken:
        budgets.settle(reservation, 0.25)  # each cost less than it reserved
    (counter,) = budgets.counters()
    assert counter["spent_usd"] == pytest.approx(2.5) and counter["reserved_usd"] == 0
    assert counter["calls"] == 10
    assert budgets.reserve([charge], 8.0, 60)  # what was not spent is free again
    error = refused[0]
    assert error.context["budget"] == "b" and error.context["limit_usd"] == 10.5
    assert error.context["resets_at"] == "2026-12-06T00:00:00+00:00"


def test_all_or_nothing_periods_and_expiry(ledger: tuple[Ledger, Clock]) -> None:
    budgets, clock = ledger
    small = Charge(BudgetSpec(name="small", scope="user", limit_usd=1.0), "ann")
    large = Charge(BudgetSpec(name="large", scope="global", limit_usd=100.0), "*")
    budgets.reserve([large, small], 0.9, ttl_s=30)
    with pytest.raises(BudgetExceededError, match="'small'"):
        budgets.reserve([large, small], 0.5, ttl_s=30)
    by_name = {c["budget"]: c for c in budgets.counters()}
    assert by_name["large"]["reserved_usd"] == pytest.approx(0.9)  # the refusal moved nothing
    clock.now += timedelta(seconds=31)  # the first call's process died: it expires
    budgets.reserve([large, small], 0.5, ttl_s=30)
    by_name = {c["budget"]: c for c in budgets.counters()}
    assert by_name["small"]["reserved_usd"] == pytest.approx(0.5)
    clock.now = datetime(2026, 12, 6, 0, 0, 1, tzinfo=UTC)  # a new day: a new counter
    budgets.reserve([small], 0.9, ttl_s=30)
    days = sorted(c["period_start"] for c in budgets.counters() if c["budget"] == "small")
    assert days == ["2026-12-05T00:00:00+00:00", "2026-12-06T00:00:00+00:00"]


def test_periods_and_prices() -> None:
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_of("day", now)[1] == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_of("month", now) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_of("total", now)[1] is None
    price = PriceSpec(input=2.0, cached_input=1.0, output=8.0)
    # 1,000 prompt tokens of which 400 cached, 500 completion tokens
    assert cost_of(Usage(1000, 500, 400), price) == pytest.approx((600 * 2 + 400 + 500 * 8) / 1e6)


# -- through the served gateway ---------------------------------------------------------


def _spec(fake_url: str) -> dict[str, Any]:
    spec = gateway_spec(fake_url)
    spec["prices"] = {"a": {"input": 1000.0, "output": 1000.0}}  # $0.001 a token
    spec["budgets"] = [
        {"name": "app-daily", "scope": "key", "subject": "app", "limit_usd": 0.5},
        {"name": "per-conversation", "scope": "conversation", "limit_usd": 0.2},
    ]
    spec["limits"] = {
        "default": {"max_tokens": 20, "max_tokens_ceiling": 100},
        "keys": {"limited": {"rpm": 2, "tpm": 1000, "max_tokens_ceiling": 100}},
    }
    return spec


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("gwbudgets")
    with served_gateway(root, _spec, predictors=("other", "limited")) as found:
        found["app"] = found["key"]
        yield found


def _client(served: dict[str, Any], key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=served["base"], api_key=served[key], max_retries=0)


def _settled(ledger: Any, budget: str, subject: str | None = None) -> dict[str, Any]:
    """The budget's counter once nothing is reserved on it: a call's settlement runs after
    its answer is sent."""
    from conveyor.testing.wait import wait_until

    def counter() -> dict[str, Any] | None:
        rows = ledger() if callable(ledger) else ledger.counters()
        found = [c for c in rows if c["budget"] == budget and subject in (None, c["subject"])]
        assert len(found) == 1, found
        return found[0] if found[0]["reserved_usd"] == pytest.approx(0, abs=1e-9) else None

    found: dict[str, Any] = wait_until(counter, message=f"{budget}'s calls settled")
    return found


def _fifty_calls(served: dict[str, Any], api_key: str) -> tuple[list[Any], list[Any]]:
    """50 concurrent chat calls by ``api_key``: the answered ones and the 429s (some of
    each, every refusal ``budget_exceeded``); nothing else but a 503 when the ledger could
    not answer in time."""

    async def main() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=served["base"], api_key=api_key, max_retries=0)
        try:
            return await asyncio.gather(
                *(
                    client.chat.completions.create(model="via-a", messages=_ask(5))
                    for _ in range(50)
                ),
                return_exceptions=True,
            )
        finally:
            await client.close()

    results = asyncio.run(main())
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    # on a machine loaded far past this suite's own (the store slower than its 0.5 s
    # timeout), a call the ledger could not take in time is a 503, never let through
    unavailable = [
        r for r in results if isinstance(r, openai.InternalServerError) and r.status_code == 503
    ]
    assert len(answered) + len(refused) + len(unavailable) == 50, results
    assert answered and refused and len(unavailable) < 25
    assert all(r.body["code"] == "budget_exceeded" for r in refused)
    return answered, refused


def _ask(words: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(["word"] * words)}]


def test_a_conversation_budget_trips_naming_itself(served: dict[str, Any]) -> None:
    client = _client(served, "other")
    headers = {"x-conveyor-conversation": "c-1"}
    # each call reserves (its prompt counted + 20 max tokens) x $0.001 and spends 7 tokens
    spent = 0
    caught: openai.RateLimitError | None = None
    for _ in range(60):
        try:
            client.chat.completions.create(model="via-a", messages=_ask(3), extra_headers=headers)
        except openai.RateLimitError as exc:
            caught = exc
            break
        spent += 1
    assert caught is not None, "the budget never tripped"
    error: Any = caught.body
    assert error["code"] == "budget_exceeded"
    assert "'per-conversation'" in error["message"] and "limit $0.2" in error["message"]
    assert error["budget"]["subject"] == "c-1" and error["budget"]["resets_at"]
    assert caught.response.headers["retry-after"]
    assert 1 <= spent < 60
    events = calls(served, "via-a", spent + 1)
    assert [e["http_status"] for e in events] == [200] * spent + [429]
    assert all(e["cost_usd"] > 0 for e in events[:-1]) and events[-1]["cost_usd"] is None
    assert events[0]["budgets"] == ["per-conversation"]
    # another conversation has its own budget
    client.chat.completions.create(
        model="via-a", messages=_ask(3), extra_headers={"x-conveyor-conversation": "c-2"}
    )


def test_fifty_concurrent_calls_never_overshoot_the_key_budget(served: dict[str, Any]) -> None:
    project: Project = served["project"]
    answered, _ = _fifty_calls(served, served["app"])
    from conveyor.gateway.budgets import SqlBudgets as Ledger

    counter = _settled(Ledger(project.store), "app-daily")
    assert counter["spent_usd"] <= 0.5 and counter["calls"] == len(answered)
    # each call spent its prompt (5 words + "echo:" answer of 6) at $0.001 a token
    assert counter["spent_usd"] == pytest.approx(len(answered) * 0.011, rel=1e-6)


def test_a_stream_stopped_early_is_charged_for_what_was_generated(
    served: dict[str, Any],
) -> None:
    fake = served["fake"]
    client = _client(served, "other")
    fake._state.chunk_delay_s = 0.05  # pace the stream so the client can stop it
    stream = client.chat.completions.create(
        model="via-a",
        messages=_ask(60),
        max_tokens=60,
        stream=True,
        extra_headers={"x-conveyor-conversation": "long"},
        stream_options={"include_usage": True},
    )
    try:
        received = 0
        for chunk in stream:
            received += bool(chunk.choices)
            if received == 3:
                break
        stream.close()
    finally:
        fake._state.chunk_delay_s = 0.0

    def cancelled() -> dict[str, Any] | None:
        found = [e for e in calls(served, "via-a", 1) if e["status"] == "cancelled"]
        return found[0] if found else None

    from conveyor.testing.wait import wait_until

    event = wait_until(cancelled, message="the cancelled call's event", timeout=20)
    assert event["usage_estimated"] is True
    assert 3 <= event["completion_tokens"] < 60
    # charged for the prompt estimate and what was generated, not max_tokens
    assert event["cost_usd"] < (event["prompt_tokens"] + 60) * 0.001


def test_key_limits_rpm_tpm_and_max_tokens(served: dict[str, Any]) -> None:
    client = _client(served, "limited")
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model="b", messages=_ask(1), max_tokens=500)
    assert too_many.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as too_large:  # over the minute's tokens
        client.chat.completions.create(model="b", messages=_ask(2000), max_tokens=10)
    assert "tokens per minute" in too_large.value.body["message"]
    client.chat.completions.create(model="b", messages=_ask(1), max_tokens=5)
    client.chat.completions.create(model="b", messages=_ask(1), max_tokens=5)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="b", messages=_ask(1), max_tokens=5)
    assert limited.value.body["code"] == "rate_limited"
    assert float(limited.value.response.headers["retry-after"]) >= 1
    # a request naming no max_tokens gets the key's default
    other = _client(served, "other").chat.completions.create(
        model="b", messages=_ask(40), extra_headers={"x-conveyor-conversation": "d"}
    )
    assert other.usage.completion_tokens == 20 and other.choices[0].finish_reason == "length"


def test_budgets_and_usage_reports(served: dict[str, Any]) -> None:
    import httpx
    from typer.testing import CliRunner

    import conveyor.cli  # noqa: F401  (the CLI loads before a capability's CLI module)
    from conveyor.gateway.cli import llm_app

    client = _client(served, "other")
    client.chat.completions.create(
        model="via-a", messages=_ask(2), extra_headers={"x-conveyor-conversation": "r"}
    )
    calls(served, "via-a", 1)
    root = str(served["project"].root)
    _settled(SqlBudgets(served["project"].store), "per-conversation", "r")
    runner = CliRunner()
    done = runner.invoke(llm_app, ["budgets", "--json", "-C", root])
    assert done.exit_code == 0, done.output
    counters = json.loads(done.stdout)["items"]
    (mine,) = [c for c in counters if c["budget"] == "per-conversation" and c["subject"] == "r"]
    assert mine["spent_usd"] == pytest.approx(0.005) and mine["reserved_usd"] == 0
    usage = runner.invoke(llm_app, ["usage", "--by", "conversation", "--json", "-C", root])
    assert usage.exit_code == 0, usage.output
    rows = {r["conversation"]: r for r in json.loads(usage.stdout)["items"]}
    # two words of prompt and the "echo: word word" answer at $0.001 a token
    assert rows["r"]["calls"] == 1 and rows["r"]["cost_usd"] == pytest.approx(0.005)
    headers = {"authorization": f"Bearer {served['other']}"}
    url = served["base"].removesuffix("/llm/v1")
    over_http = httpx.get(f"{url}/v1/llm/usage?by=conversation", headers=headers).json()
    assert {r["conversation"]: r for r in over_http["rows"]}["r"] == rows["r"]
    bad = runner.invoke(llm_app, ["usage", "--by", "color", "-C", root])
    assert bad.exit_code != 0 and "one of model" in " ".join(bad.output.split())


@pytest.mark.redis
def test_budgets_in_redis_hold_through_the_served_gateway(tmp_path: Path) -> None:
    """gateway.budgets_url: the stage reserves and settles in Redis; the CLI and HTTP reports
    read the counters there (the store holds none)."""
    import httpx
    from typer.testing import CliRunner

    import conveyor.cli  # noqa: F401  (the CLI loads before a capability's CLI module)
    from conveyor.gateway.cli import llm_app

    with redis_prefix() as url:

        def spec_of(fake_url: str) -> dict[str, Any]:
            return {**_spec(fake_url), "budgets_url": url}

        with served_gateway(tmp_path, spec_of) as served:
            answered, refused = _fifty_calls(served, served["key"])
            assert "'app-daily'" in refused[0].body["message"]
            headers = {"authorization": f"Bearer {served['viewer']}"}

            def over_http() -> list[dict[str, Any]]:
                got = httpx.get(f"{served['url']}/v1/llm/budgets", headers=headers)
                assert got.status_code == 200, got.text
                return list(got.json()["counters"])

            counter = _settled(over_http, "app-daily")
            assert counter["calls"] == len(answered) and counter["spent_usd"] <= 0.5
            assert counter["spent_usd"] == pytest.approx(len(answered) * 0.011, rel=1e-6)
            assert SqlBudgets(served["project"].store).counters() == []  # none in the store
            done = CliRunner().invoke(
                llm_app, ["budgets", "--json", "-C", str(served["project"].root)]
            )
            assert done.exit_code == 0, done.output
            assert counter in json.loads(done.stdout)["items"]


@pytest.mark.redis
def test_redis_counters_outlive_their_period_then_go() -> None:
    """A day's counter lives until 35 days after its day ends, a month's 400 days after;
    a total's for ever; a settled reservation leaves no key behind."""
    import redis

    clock = Clock()  # 10:00, so the day ends in 14 h
    with redis_prefix() as url:
        ledger = RedisBudgets(url, clock=clock)
        client = redis.Redis.from_url(url.split("?")[0])
        try:
            day = _budget(5.0)
            total = Charge(BudgetSpec(name="t", scope="global", period="total", limit_usd=9), "*")
            held = ledger.reserve([day, total], 1.0, 60)
            keys = {k.decode(): client.ttl(k) for k in client.scan_iter(f"{ledger.prefix}*")}
            counters = {k: ttl for k, ttl in keys.items() if ":c:" in k or "}c:" in k}
            (day_ttl,) = [t for k, t in counters.items() if "c:b|" in k and not k.endswith("held")]
            assert day_ttl == pytest.approx(14 * 3600 + 35 * 86400, abs=5)
            (total_ttl,) = [t for k, t in counters.items() if "c:t|" in k and "held" not in k]
            assert total_ttl == -1  # no expiry
            ledger.settle(held, 0.5)
            left = [k.decode() for k in client.scan_iter(f"{ledger.prefix}*")]
            assert not [k for k in left if "}r:" in k or k.endswith(":held")], left
            assert {c["budget"]: c["spent_usd"] for c in ledger.counters()} == {"b": 0.5, "t": 0.5}
        finally:
            ledger.close()
            client.close()


def test_a_reservation_used_in_part(ledger: tuple[Ledger, Clock]) -> None:
    """adjust: part of a reservation spent and released, the rest kept (a lease's flush);
    released whole, the reservation is gone."""
    budgets, _ = ledger
    charge = _budget(10.0)
    held = budgets.reserve([charge], 4.0, 60)
    assert budgets.adjust(held, 1.5, 3, 1.0, 60) == pytest.approx(3.0)  # cost past the part
    (counter,) = budgets.counters()
    assert counter["spent_usd"] == pytest.approx(1.5) and counter["calls"] == 3
    assert counter["reserved_usd"] == pytest.approx(3.0)
    assert budgets.adjust(held, 0.5, 1, 100.0, 60) == 0.0  # the rest released: gone
    (counter,) = budgets.counters()
    assert counter["spent_usd"] == pytest.approx(2.0) and counter["reserved_usd"] == 0
    budgets.settle(held, 9.0)  # settling what is gone changes nothing
    assert budgets.counters()[0]["spent_usd"] == pytest.approx(2.0)


def test_leases_of_two_workers_hold_the_limit(ledger: tuple[Ledger, Clock]) -> None:
    """Two workers (two LeasedLedgers on one ledger), 300 concurrent calls: what they spend
    never passes the limit, every refusal names the budget, and once both drain the
    ledger holds exactly what was settled, nothing reserved."""
    import random

    from conveyor.gateway.leases import LeasedLedger

    budgets, clock = ledger
    charge = _budget(3.0)
    workers = [LeasedLedger(budgets, 0.05, 60, clock=clock) for _ in range(2)]
    settled: list[float] = []
    refused: list[BudgetExceededError] = []
    rng = random.Random(7)

    async def one(worker: LeasedLedger) -> None:
        cost = rng.choice([0.01, 0.02, 0.03])
        try:
            local = await worker.areserve([charge], 0.03, 60)
        except BudgetExceededError as exc:
            refused.append(exc)
            return
        await asyncio.sleep(rng.random() * 0.01)
        await worker.asettle(local, cost)
        settled.append(cost)

    async def main() -> None:
        await asyncio.gather(*(one(workers[i % 2]) for i in range(300)))
        for worker in workers:
            await worker.drain()
        aclose = getattr(budgets, "aclose", None)  # Redis: this loop's client
        if aclose is not None:
            await aclose()

    asyncio.run(main())
    assert refused and settled  # the limit was reached
    assert all(e.context["budget"] == "b" for e in refused)
    (counter,) = budgets.counters()
    assert counter["spent_usd"] == pytest.approx(sum(settled))
    assert counter["spent_usd"] <= 3.0 + 1e-9
    assert counter["reserved_usd"] == pytest.approx(0, abs=1e-9)
    assert counter["calls"] == len(settled)
    # a slice is 5% of the limit: near the limit a call may be refused early by at most
    # one slice per worker, never let past it
    assert counter["spent_usd"] >= 3.0 - 2 * 0.15 - 0.03


def test_budget_leases_hold_through_the_served_gateway(tmp_path: Path) -> None:
    """gateway.budget_lease: 50 concurrent calls spend slices in memory; the key's budget
    is never passed, and once the slices are given back (a second idle) the ledger holds
    exactly what the answered calls cost, with nothing reserved."""

    def spec_of(fake_url: str) -> dict[str, Any]:
        return {**_spec(fake_url), "budget_lease": 0.3}  # a slice holds some 4 calls

    with served_gateway(tmp_path, spec_of) as served:
        answered, _ = _fifty_calls(served, served["key"])
        counter = _settled(SqlBudgets(served["project"].store), "app-daily")
        assert counter["calls"] == len(answered) and counter["spent_usd"] <= 0.5
        assert counter["spent_usd"] == pytest.approx(len(answered) * 0.011, rel=1e-6)
