"""Routing and resilience through the served gateway, with the openai client, in front of
a fake upstream that fails on command: a fallback is taken on 500, 429 (and the limited
deployment is left alone for its Retry-After) and a connection reset (retried once first);
a 400 is never retried elsewhere; nothing is retried once a stream has begun (a cut or
garbage mid-stream ends it with an error event); repeated failures open a deployment's
breaker; a client that goes away closes the upstream stream; the weighted split follows
its weights and is recorded."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from gateway_api_support import asked, calls, leave_a_stream, served_gateway

from conveyor.gateway.router import Router
from conveyor.gateway.settings import GatewaySpec
from conveyor.testing.wait import wait_until

HELLO: Any = [{"role": "user", "content": "hello gateway"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with (
        served_gateway(tmp_path_factory.mktemp("gwroute")) as found,
        openai.OpenAI(
            base_url=found["base"], api_key=found["key"], max_retries=0, timeout=20
        ) as client,
    ):
        found["client"] = client
        yield found


def _chat(served: dict[str, Any], model: str, **extra: Any) -> Any:
    return served["client"].chat.completions.with_raw_response.create(
        model=model, messages=HELLO, **extra
    )


def test_a_500_falls_back_to_the_next_deployment(served: dict[str, Any]) -> None:
    fake = served["fake"]
    fake.fail(500, model="gpt-a")
    raw = _chat(served, "via-a")
    assert (
        raw.headers["x-conveyor-deployment"] == "b" and raw.headers["x-conveyor-fallbacks"] == "1"
    )
    assert raw.parse().model == "gpt-b"
    (event,) = calls(served, "via-a")
    assert event["failures"] == [{"deployment": "a", "kind": "server", "status": 500}]
    assert event["deployment"] == "b" and event["fallbacks"] == 1 and event["attempts"] == 2


def test_a_429_falls_back_and_its_deployment_rests_for_its_retry_after(
    served: dict[str, Any],
) -> None:
    fake = served["fake"]
    fake.fail(429, model="gpt-limited", retry_after=60)
    assert _chat(served, "via-limited").headers["x-conveyor-deployment"] == "b"
    assert asked(fake, "gpt-limited") == 1
    # Within its Retry-After the limited deployment is not called at all.
    assert _chat(served, "via-limited").headers["x-conveyor-deployment"] == "b"
    assert asked(fake, "gpt-limited") == 1
    first, second = calls(served, "via-limited", 2)
    assert first["failures"][0]["kind"] == "rate_limited"
    assert second["failures"] == [{"deployment": "limited", "kind": "cooldown", "status": None}]


def test_a_reset_is_retried_once_then_falls_back(served: dict[str, Any]) -> None:
    fake = served["fake"]
    # A reset once: the retry (after a backoff) answers, no fallback.
    fake.fail("reset", model="gpt-resetting")
    assert _chat(served, "via-resetting").headers["x-conveyor-deployment"] == "resetting"
    assert asked(fake, "gpt-resetting") == 2
    # Twice: the call and its one retry (retry.attempts) fail, then the fallback answers.
    fake.fail("reset", model="gpt-resetting", times=2)
    assert _chat(served, "via-resetting").headers["x-conveyor-deployment"] == "b"
    assert asked(fake, "gpt-resetting") == 4
    once, twice = calls(served, "via-resetting", 2)
    assert once["attempts"] == 2 and once["fallbacks"] == 0
    assert [f["kind"] for f in twice["failures"]] == ["connect", "connect"]
    assert twice["attempts"] == 3 and twice["fallbacks"] == 1


def test_a_bad_request_is_passed_back_and_never_sent_elsewhere(served: dict[str, Any]) -> None:
    fake = served["fake"]
    before = asked(fake, "gpt-b")
    fake.fail(400, model="gpt-refused")
    with pytest.raises(openai.BadRequestError) as refused:
        _chat(served, "via-refused")
    assert "failing on command (400)" in refused.value.message
    assert asked(fake, "gpt-b") == before


def test_repeated_failures_open_the_breaker_then_no_call_is_made(served: dict[str, Any]) -> None:
    fake = served["fake"]
    fake.fail(503, model="gpt-flaky", times=None)
    try:
        for _ in range(2):  # breaker.failures: 2
            assert _chat(served, "via-flaky").headers["x-conveyor-deployment"] == "b"
        assert asked(fake, "gpt-flaky") == 2
        assert _chat(served, "via-flaky").headers["x-conveyor-deployment"] == "b"
        assert asked(fake, "gpt-flaky") == 2  # open: skipped
        last = calls(served, "via-flaky", 1)[0]
        assert last["failures"] == [{"deployment": "flaky", "kind": "breaker_open", "status": None}]

        # An alias whose only deployment is open: 503 with Retry-After, in OpenAI's shape.
        fake.fail(503, model="gpt-alone", times=None)
        for _ in range(2):
            with pytest.raises(openai.InternalServerError) as failed:
                _chat(served, "lonely")
            assert failed.value.status_code == 502
        with pytest.raises(openai.InternalServerError) as unavailable:
            _chat(served, "lonely")
        assert unavailable.value.status_code == 503
        assert unavailable.value.code == "no_deployment_available"
        assert int(unavailable.value.response.headers["retry-after"]) >= 1
        assert asked(fake, "gpt-alone") == 2
    finally:
        fake.reset()


def _drain(stream: Any, into: list[Any]) -> None:
    for chunk in stream:
        into.append(chunk)


def test_no_retry_or_fallback_once_a_stream_has_begun(served: dict[str, Any]) -> None:
    fake = served["fake"]
    for what, model in (("cut", "gpt-cut"), ("garbage", "gpt-garbled")):
        fake.fail(what, model=model, after_chunks=3)
        alias = "via-" + model.removeprefix("gpt-")
        before = asked(fake, "gpt-b")
        got = []
        stream = served["client"].chat.completions.create(model=alias, messages=HELLO, stream=True)
        with pytest.raises(openai.APIError) as ended:
            _drain(stream, got)
        assert len(got) == 3, what  # what arrived, then the error event
        assert "upstream_protocol" in str(ended.value.body), ended.value.body
        assert asked(fake, model) == 1 and asked(fake, "gpt-b") == before, what
        (event,) = calls(served, alias)
        assert event["status"] == "error" and event["deployment"] == model.removeprefix("gpt-")
        assert event["completion_tokens"] == 3  # charged for what arrived (no usage came)


def test_a_failure_before_the_first_chunk_falls_back_in_a_stream(served: dict[str, Any]) -> None:
    fake = served["fake"]
    fake.fail(500, model="gpt-early")
    stream = served["client"].chat.completions.create(
        model="via-early", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].model == "gpt-b" and chunks[-1].choices == []


def test_a_client_going_away_closes_the_upstream_stream(served: dict[str, Any]) -> None:
    fake = served["fake"]
    with leave_a_stream(served, "b"):
        record = wait_until(
            lambda: fake.streams[-1] if fake.streams[-1].ended else None,
            message="the upstream stream to end",
            timeout=10,
        )
        assert not record.completed and record.chunks_sent < 100
        event = calls(served, "b", 1)[0]
        assert event["status"] == "cancelled" and event["stream"] is True


def test_the_split_follows_its_weights_and_is_recorded(served: dict[str, Any]) -> None:
    raw = _chat(served, "split")
    (event,) = calls(served, "split")
    assert event["assigned"] == raw.headers["x-conveyor-deployment"] == event["deployment"]

    spec = GatewaySpec.model_validate(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "deployments": {
                "a": {"provider": "p", "model": "a"},
                "b": {"provider": "p", "model": "b"},
            },
            "models": {"split": {"deployments": ["a", "b"], "weights": {"a": 1, "b": 3}}},
        }
    )
    router = Router(spec, rng=random.Random(7))
    plans = [router.plan("split") for _ in range(4000)]
    share = sum(1 for order, drawn in plans if drawn == "b") / len(plans)
    assert 0.72 < share < 0.78
    assert all(order == [drawn, "b" if drawn == "a" else "a"] for order, drawn in plans)
