"""The Anthropic provider driven directly against the fake Messages API server (uvicorn in
a thread, the real HTTP boundary): OpenAI bodies translated to Anthropic's requests, its
answers and streams translated back (text, tools, usage with cached tokens, finish
reasons), and every failure typed as the router needs it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from conveyor.errors import ConfigError
from conveyor.gateway.providers.anthropic import AnthropicProvider, to_anthropic
from conveyor.gateway.types import Chunk, Deployment, Provider, UpstreamError
from conveyor.testing.fake_anthropic import FakeAnthropic, serve_fake_anthropic
from conveyor.testing.wait import wait_until

KEY = "sk-ant-test-key"
ENV = "CONVEYOR_TEST_ANTHROPIC_KEY"
CLAUDE = Deployment("anthropic/claude", "anthropic", "claude-test", timeout_s=10.0)
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with serve_fake_anthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
def settings(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    fake.reset()
    monkeypatch.setenv(ENV, KEY)
    return {"base_url": fake.url, "api_key_env": ENV, "max_tokens": 50}


def run(settings: dict[str, Any], scenario: Any) -> Any:
    """``scenario(provider)`` on a fresh provider, closed afterwards, in its own loop."""

    async def main() -> Any:
        provider = AnthropicProvider(settings)
        try:
            return await scenario(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


async def collect(chunks: AsyncIterator[Chunk]) -> list[dict[str, Any]]:
    return [chunk.data async for chunk in chunks]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(Chunk(c).text() for c in chunks)


def ask(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "claude-test", "messages": [{"role": "user", "content": text}], **fields}


def test_the_request_is_translated_to_the_messages_api(
    fake: FakeAnthropic, settings: dict[str, Any]
) -> None:
    body = {
        "model": "claude-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"},
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
        ],
        "stop": "STOP",
        "temperature": 1.7,
        "top_p": 0.9,
        "user": "alice",
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    assert isinstance(AnthropicProvider(settings), Provider)
    run(settings, lambda p: p.chat(body, CLAUDE))
    sent = fake.requests[-1]
    assert sent == {
        "model": "claude-test",
        "max_tokens": 50,  # Anthropic requires one: the provider's default
        "system": "Be brief.\n\nUse metric units.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",  # the tool's result and the next question: one user turn
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_1",
                        "content": [{"type": "text", "text": "21 C, sunny"}],
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        "stop_sequences": ["STOP"],
        "temperature": 1.0,  # OpenAI's 0..2 clamped to Anthropic's 0..1
        "top_p": 0.9,
        "metadata": {"user_id": "alice"},
        "tools": [
            {
                "name": "weather",
                "description": "The weather in a city",
                "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }
    headers = fake.headers[-1]
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"


def test_translation_of_images_limits_and_choices() -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    body = ask("x", max_completion_tokens=7, max_tokens=99)
    body["messages"][0]["content"] = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": png}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    body["tools"] = [WEATHER]
    body["tool_choice"] = {"type": "function", "function": {"name": "weather"}}
    request = to_anthropic(body, "m")
    assert request["max_tokens"] == 7  # max_completion_tokens wins over max_tokens
    assert request["messages"][0]["content"][1:] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    assert request["tool_choice"] == {"type": "tool", "name": "weather"}
    for bad in (
        ask("x", n=2),
        ask("x", response_format={"type": "json_object"}),
        {"model": "m", "messages": [{"role": "function", "content": "x"}]},
        {"model": "m", "messages": []},
        {**ask("x"), "tools": [{"type": "code_interpreter"}]},
    ):
        with pytest.raises(UpstreamError) as info:
            to_anthropic(bad, "m")
        assert info.value.kind == "bad_request"
        assert info.value.body["error"]["type"] == "invalid_request_error"


def test_an_answer_comes_back_as_a_chat_completion(settings: dict[str, Any]) -> None:
    answer = run(settings, lambda p: p.chat(ask("hello there world"), CLAUDE))
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "claude-test"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello there world"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert answer["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_max_tokens_and_stop_give_their_finish_reasons(settings: dict[str, Any]) -> None:
    async def scenario(p: AnthropicProvider) -> tuple[dict[str, Any], dict[str, Any]]:
        cut = await p.chat(ask("one two three four five", max_tokens=3), CLAUDE)
        stopped = await p.chat(ask("one two three four five", stop=["three", "five"]), CLAUDE)
        return cut, stopped

    cut, stopped = run(settings, scenario)
    assert cut["choices"][0]["message"]["content"] == "echo: one two"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 3
    assert stopped["choices"][0]["message"]["content"] == "echo: one two "
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_tool_use_becomes_tool_calls(settings: dict[str, Any]) -> None:
    body = ask("Paris", tools=[WEATHER])
    answer = run(settings, lambda p: p.chat(body, CLAUDE))
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("toolu_")
    assert call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"query": "Paris"}


def test_prompt_cache_reads_are_counted_as_cached_tokens(settings: dict[str, Any]) -> None:
    system = {
        "role": "system",
        "content": [
            {
                "type": "text",
                "text": "a long stable system prompt",
                "cache_control": {"type": "ephemeral"},
            }
        ],
    }
    body = {"model": "claude-test", "messages": [system, {"role": "user", "content": "hi"}]}

    async def scenario(p: AnthropicProvider) -> list[dict[str, Any]]:
        return [await p.chat(body, CLAUDE), await p.chat(body, CLAUDE)]

    first, second = run(settings, scenario)
    # Five system words written to the cache, then read from it; one user word.
    assert first["usage"]["prompt_tokens"] == 6
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert second["usage"]["prompt_tokens"] == 6
    assert second["usage"]["prompt_tokens_details"] == {"cached_tokens": 5}


def test_a_stream_is_translated_to_chunks(fake: FakeAnthropic, settings: dict[str, Any]) -> None:
    body = ask("alpha beta gamma", stream=True, stream_options={"include_usage": True})

    async def scenario(p: AnthropicProvider) -> tuple[Any, Any, Any]:
        chunks = await collect(p.stream(body, CLAUDE))
        plain = await collect(p.stream(ask("alpha beta gamma", stream=True), CLAUDE))
        answer = await p.chat(ask("alpha beta gamma"), CLAUDE)
        return chunks, plain, answer

    chunks, plain, answer = run(settings, scenario)
    assert fake.requests[0]["stream"] is True
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(chunks) == 1 + 4 + 1 + 1  # role, one per word, finish, usage
    assert text_of(chunks) == answer["choices"][0]["message"]["content"] == "echo: alpha beta gamma"
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == answer["usage"]
    assert Chunk(chunks[-1]).usage is not None
    assert Chunk(chunks[-1]).usage.completion_tokens == 4  # type: ignore[union-attr]
    # Without stream_options.include_usage, no usage chunk.
    assert plain[:-1] != [] and all("usage" not in c for c in plain)
    assert len(plain) == len(chunks) - 1


def test_a_streamed_tool_call_arrives_in_deltas(settings: dict[str, Any]) -> None:
    body = ask("Rome", tools=[WEATHER], stream=True)
    chunks = run(settings, lambda p: collect(p.stream(body, CLAUDE)))
    calls = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in chunks
        if c["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[0] == [
        {
            "index": 0,
            "id": calls[0][0]["id"],
            "type": "function",
            "function": {"name": "weather", "arguments": ""},
        }
    ]
    assert len(calls) == 3  # the start, then the arguments in two pieces
    arguments = "".join(c[0]["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == {"query": "Rome"}
    assert text_of(chunks) == "Let me look."
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def failure(
    settings: dict[str, Any], call: str = "chat", body: Any = None, **deployment: Any
) -> UpstreamError:
    target = Deployment(
        "anthropic/claude", "anthropic", "claude-test", **{"timeout_s": 10.0, **deployment}
    )
    body = body or ask("hi")

    async def scenario(p: AnthropicProvider) -> None:
        if call == "chat":
            await p.chat(body, target)
        elif call == "embeddings":
            await p.embeddings({"model": "m", "input": "x"}, target)
        else:
            await collect(p.stream({**body, "stream": True}, target))

    with pytest.raises(UpstreamError) as info:
        run(settings, scenario)
    assert info.value.deployment == "anthropic/claude"
    return info.value


@pytest.mark.parametrize("call", ["chat", "stream"])
def test_http_failures_are_typed(fake: FakeAnthropic, settings: dict[str, Any], call: str) -> None:
    fake.fail(429, retry_after=2)
    error = failure(settings, call)
    assert (error.kind, error.status, error.retry_after_s, error.streamed) == (
        "rate_limited",
        429,
        2.0,
        False,
    )
    fake.fail(529)
    error = failure(settings, call)
    assert (error.kind, error.status) == (
        "server",
        529,
    )  # overloaded: another deployment may answer
    fake.fail(500)
    assert failure(settings, call).kind == "server"
    fake.fail(400)
    error = failure(settings, call)
    assert (error.kind, error.status) == ("bad_request", 400)
    assert error.body == {
        "error": {
            "message": "failing on command (400)",
            "type": "invalid_request_error",
            "code": "invalid_request_error",
            "param": None,
        }
    }
    fake.fail("garbage")
    assert failure(settings, call).kind == "protocol"
    settings["api_key_env"] = "CONVEYOR_TEST_ANTHROPIC_OTHER"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CONVEYOR_TEST_ANTHROPIC_OTHER", "sk-wrong")
        error = failure(settings, call)
    assert (error.kind, error.status) == ("bad_request", 401)


def test_a_dropped_connection_is_a_protocol_error(
    fake: FakeAnthropic, settings: dict[str, Any]
) -> None:
    fake.fail("cut")
    error = failure(settings, "chat")
    assert (error.kind, error.streamed) == ("protocol", False)
    fake.fail("cut", after_events=4)  # message_start, ping, block start, first word: 2 chunks out
    error = failure(settings, "stream")
    assert (error.kind, error.streamed) == ("protocol", True)
    fake.fail("error_event", after_events=4)
    error = failure(settings, "stream")
    assert (error.kind, error.streamed) == ("server", True)
    assert "overloaded_error" in error.message


def test_refused_connections_and_timeouts(fake: FakeAnthropic, settings: dict[str, Any]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed_port = sock.getsockname()[1]
    sock.close()
    refused = {**settings, "base_url": f"http://127.0.0.1:{closed_port}"}
    assert failure(refused, "chat").kind == "connect"
    assert failure(refused, "stream").kind == "connect"
    fake.fail(0, delay_s=1.0)  # the fake answers after 1 s; the deployment waits 0.2 s
    assert failure(settings, "chat", timeout_s=0.2).kind == "timeout"
    fake.fail(0, delay_s=1.0)
    error = failure(settings, "stream", first_byte_timeout_s=0.2)
    assert (error.kind, error.streamed) == ("timeout", False)


def test_closing_a_stream_closes_the_upstream_stream(
    fake: FakeAnthropic, settings: dict[str, Any]
) -> None:
    fake.event_delay_s = 0.02  # paced, so the client can leave in the middle
    body = ask(" ".join(f"w{i}" for i in range(200)), stream=True, max_tokens=500)

    async def scenario(p: AnthropicProvider) -> list[dict[str, Any]]:
        stream = p.stream(body, CLAUDE)
        got = [(await anext(stream)).data for _ in range(3)]
        await stream.aclose()  # type: ignore[attr-defined]
        return got

    got = run(settings, scenario)
    assert len(got) == 3
    [record] = wait_until(
        lambda: [s for s in fake.streams if s.ended], message="the fake's stream to end"
    )
    assert not record.completed
    assert record.events_sent < 20  # of the 200-odd events the answer has


def test_no_embeddings_and_bad_settings(settings: dict[str, Any]) -> None:
    error = failure(settings, "embeddings")
    assert error.kind == "bad_request"
    assert "no embeddings API" in error.message
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        AnthropicProvider({**settings, "api_key_env": "NOT_SET_ANYWHERE"})
    with pytest.raises(ConfigError, match="base_urll"):
        AnthropicProvider({**settings, "base_urll": "x"})
    assert KEY not in repr(AnthropicProvider(settings))
