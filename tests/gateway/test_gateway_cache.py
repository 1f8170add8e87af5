"""The exact cache through the served gateway with the openai client, on the embedded
cache and on Redis: a repeated request is answered without reaching the upstream (plain
or streamed, either way round), another tenant's is not, a sampling request is never
cached, an entry expires, a cut stream is never stored, and a hit is charged nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from gateway_api_support import calls, gateway_spec, served_gateway

from conveyor.testing.wait import wait_until


def _spec(fake_url: str) -> dict[str, Any]:
    spec = gateway_spec(fake_url)
    spec["cache"] = {"exact": True, "ttl_s": 2}
    spec["prices"] = {"a": {"input": 1.0, "output": 1.0}}
    return spec


@pytest.fixture(scope="module", params=["embedded", "redis"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    env = {}
    if request.param == "redis":
        env["CONVEYOR_CACHE"] = f"redis://127.0.0.1:6379/0?prefix=gwcache-{uuid.uuid4().hex}:"
    with served_gateway(
        tmp_path_factory.mktemp("gwcache"), _spec, predictors=("one", "two"), env=env
    ) as found:
        yield found


def _client(served: dict[str, Any], key: str = "one") -> openai.OpenAI:
    return openai.OpenAI(base_url=served["base"], api_key=served[key], max_retries=0)


def _ask(client: openai.OpenAI, text: str, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="via-a", messages=[{"role": "user", "content": text}], **extra
    )


def _stream(client: openai.OpenAI, text: str) -> str:
    parts = []
    for chunk in client.chat.completions.create(
        model="via-a",
        messages=[{"role": "user", "content": text}],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        parts.extend(c.delta.content or "" for c in chunk.choices)
    return "".join(parts)


def test_a_repeated_request_is_answered_from_the_cache(served: dict[str, Any]) -> None:
    fake, client = served["fake"], _client(served)
    text = f"cached question {uuid.uuid4().hex}"
    before = len(fake.requests)
    first = _ask(client, text, temperature=0)
    second = _ask(client, text, temperature=0)
    assert first.headers["x-conveyor-cache"] == "miss"
    assert second.headers["x-conveyor-cache"] == "hit"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert len(fake.requests) == before + 1
    assert _stream(client, text) == "echo: " + text  # a streamed request hits the same entry
    assert len(fake.requests) == before + 1
    events = calls(served, "via-a", 3)
    assert [e["cache"] for e in events] == [None, "exact", "exact"]
    assert events[0]["cost_usd"] > 0 and events[1]["cost_usd"] is None  # a hit costs nothing
    # the other way round: a streamed answer is stored whole, then answers a plain request
    other = f"streamed first {uuid.uuid4().hex}"
    assert _stream(client, other) == "echo: " + other
    again = _ask(client, other, temperature=0)
    assert again.headers["x-conveyor-cache"] == "hit"
    assert again.parse().choices[0].message.content == "echo: " + other
    assert len(fake.requests) == before + 2


def test_tenants_sampling_and_expiry(served: dict[str, Any]) -> None:
    fake = served["fake"]
    text = f"tenants {uuid.uuid4().hex}"
    _ask(_client(served), text, temperature=0)
    before = len(fake.requests)
    assert _ask(_client(served, "two"), text, temperature=0).headers["x-conveyor-cache"] == "miss"
    assert len(fake.requests) == before + 1  # another key never sees the first one's answer
    sampled = f"sampled {uuid.uuid4().hex}"
    for _ in range(2):
        answer = _ask(_client(served), sampled)  # temperature not given: OpenAI's 1
        assert "x-conveyor-cache" not in answer.headers
    assert len(fake.requests) == before + 3
    expiring = f"expiring {uuid.uuid4().hex}"
    _ask(_client(served), expiring, temperature=0)
    time.sleep(2.1)  # the entry's TTL (2 s)
    assert _ask(_client(served), expiring, temperature=0).headers["x-conveyor-cache"] == "miss"


def test_a_cut_stream_is_not_stored(served: dict[str, Any]) -> None:
    fake, client = served["fake"], _client(served)
    text = f"cut {uuid.uuid4().hex} one two three four"
    fake.fail("cut", model="gpt-a", after_chunks=2)
    with pytest.raises(openai.APIError):
        _stream(client, text)
    before = len(fake.requests)
    assert _ask(client, text, temperature=0).headers["x-conveyor-cache"] == "miss"
    assert len(fake.requests) == before + 1
    wait_until(lambda: calls(served, "via-a", 1), message="the call's event", timeout=10)
