"""The gateway's OpenAI-compatible API with the official openai client (sync, async,
streaming) in front of a fake upstream over real HTTP: bodies pass through both ways,
streams keep OpenAI's chunk shapes (the usage chunk has choices: []), and every refusal
is an OpenAI-shaped error with the right status (401 without a key, 403 for a viewer,
404 for an unknown model, 400 for a malformed body), never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from gateway_api_support import calls, served_gateway


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_gateway(tmp_path_factory.mktemp("gwapi")) as found:
        found["clients"] = {}
        try:
            yield found
        finally:
            for client in found["clients"].values():
                client.close()


def _client(served: dict[str, Any], key: str = "key") -> openai.OpenAI:
    """A sync client with ``served[key]`` (or ``key`` itself), kept open for the module."""
    clients = served["clients"]
    if key not in clients:
        token = served.get(key, key)
        clients[key] = openai.OpenAI(
            base_url=served["base"], api_key=token, max_retries=0, timeout=20
        )
    return clients[key]


HELLO = [{"role": "user", "content": "hello gateway"}]


def test_a_chat_completion_passes_through_both_ways(served: dict[str, Any]) -> None:
    client = _client(served)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    raw = client.chat.completions.with_raw_response.create(
        model="fast",
        messages=HELLO,
        n=2,
        stop=["never"],
        max_completion_tokens=50,
        response_format={"type": "json_object"},
        user="u-42",
        extra_body={"vendor_extension": {"x": 1}},
    )
    assert raw.headers["x-conveyor-deployment"] == "a"
    answer = raw.parse()
    assert answer.model == "gpt-a" and len(answer.choices) == 2
    assert answer.choices[1].message.content == '{"echo": "echo: hello gateway"}'
    assert answer.usage is not None and answer.usage.completion_tokens == 2 * 4
    sent = served["fake"].requests[-1]
    assert sent["model"] == "gpt-a" and sent["n"] == 2 and sent["stop"] == ["never"]
    assert sent["max_completion_tokens"] == 50 and sent["vendor_extension"] == {"x": 1}
    assert sent["response_format"] == {"type": "json_object"} and sent["user"] == "u-42"

    called = client.chat.completions.create(model="fast", messages=HELLO, tools=tools)  # type: ignore[arg-type]
    call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert called.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup" and "hello gateway" in call.function.arguments
    assert served["fake"].requests[-1]["tools"] == tools

    cut = client.chat.completions.create(model="fast", messages=HELLO, max_tokens=2)
    assert (
        cut.choices[0].finish_reason == "length" and cut.choices[0].message.content == "echo: hello"
    )

    (event,) = calls(served, "fast", 1)
    assert event["deployment"] == "a" and event["key"] == "app" and event["status"] == "ok"
    assert event["prompt_tokens"] == 2 and event["completion_tokens"] == 2
    assert event["usage_reported"] is True and event["fallbacks"] == 0


def test_a_stream_keeps_openai_chunks_and_ends_with_the_usage_chunk(served: dict[str, Any]) -> None:
    client = _client(served)
    chunks = list(
        client.chat.completions.create(
            model="fast", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello gateway"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3 and chunks[-2].choices[0].finish_reason == "stop"

    # On the wire: the upstream's data payloads as they came, then [DONE].
    with httpx.stream(
        "POST",
        served["base"] + "/chat/completions",
        json={"model": "fast", "messages": HELLO, "stream": True},
        headers={"authorization": f"Bearer {served['key']}"},
    ) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in answer.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: {") for line in lines[:-1])
    assert '"object": "chat.completion.chunk"' in lines[0]  # the fake's spacing: not re-encoded

    event = calls(served, "fast", 1)[0]
    assert event["stream"] is True and event["ttft_ms"] is not None
    assert event["ttft_ms"] <= event["latency_ms"]


def test_the_async_client_chats_streams_and_embeds(served: dict[str, Any]) -> None:
    async def run() -> tuple[str | None, str, list[list[float]]]:
        async with openai.AsyncOpenAI(
            base_url=served["base"], api_key=served["key"], max_retries=0
        ) as client:
            answer = await client.chat.completions.create(model="fast", messages=HELLO)
            parts = []
            stream = await client.chat.completions.create(model="b", messages=HELLO, stream=True)
            async for chunk in stream:
                parts.append(chunk.choices[0].delta.content or "")
            vectors = await client.embeddings.create(model="b", input=["one text", "another"])
            return (
                answer.choices[0].message.content,
                "".join(parts),
                [d.embedding for d in vectors.data],
            )

    content, streamed, vectors = asyncio.run(run())
    assert content == streamed == "echo: hello gateway"
    assert len(vectors) == 2 and len(vectors[0]) == 8 and vectors[0] != vectors[1]
    assert abs(sum(v * v for v in vectors[0]) - 1.0) < 1e-4  # the fake's unit vectors, decoded


def test_models_lists_the_aliases_and_the_deployments(served: dict[str, Any]) -> None:
    client = _client(served)
    ids = [m.id for m in client.models.list()]
    assert ids[:1] != [] and {"fast", "split", "a", "b"} <= set(ids)
    assert client.models.retrieve("fast").id == "fast"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_no_key_a_wrong_key_and_a_viewer_are_refused_in_openai_shape(
    served: dict[str, Any],
) -> None:
    # No key at all (the openai client insists on one: plain HTTP here).
    nobody = httpx.post(served["base"] + "/chat/completions", json={"model": "fast"})
    assert nobody.status_code == 401 and nobody.headers["www-authenticate"].startswith("Bearer")
    assert nobody.json()["error"]["type"] == "authentication_error"
    assert nobody.json()["error"]["code"] == "unauthenticated"
    with pytest.raises(openai.AuthenticationError) as refused:
        _client(served, "cvy_not_a_key").chat.completions.create(model="fast", messages=HELLO)
    error = refused.value.body
    assert isinstance(error, dict) and error["type"] == "authentication_error"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        _client(served, "viewer").chat.completions.create(model="fast", messages=HELLO)
    assert denied.value.status_code == 403 and "llm.call" in denied.value.message
    with pytest.raises(openai.AuthenticationError):
        _client(served, "cvy_wrong").models.list()
    with pytest.raises(openai.NotFoundError) as unknown:
        _client(served).chat.completions.create(model="gpt-unknown", messages=HELLO)
    assert unknown.value.code == "model_not_found"
    assert "fast" in unknown.value.message  # it names the known ones


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "fast", "messages": []}', "messages"),
        (b'{"model": "fast", "messages": ["hi"]}', "messages[0]"),
        (b'{"model": "fast", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (
            b'{"model": "fast", "messages": [{"role": "user"}], "stream_options": {}}',
            "stream_options",
        ),
        (b'{"model": "fast", "messages": [{"role": "user"}], "n": 0}', "n"),
        (b'{"model": "fast", "messages": [{"role": "user"}], "max_tokens": "9"}', "max_tokens"),
        (b'{"model": 7, "input": "x"}', "model"),
    ],
)
def test_a_malformed_body_is_a_400_naming_its_field(
    served: dict[str, Any], body: bytes, param: str
) -> None:
    path = "/embeddings" if b'"input"' in body else "/chat/completions"
    answer = httpx.post(
        served["base"] + path,
        content=body,
        headers={"authorization": f"Bearer {served['key']}", "content-type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"] and error["code"] == "invalid_input"


def test_a_body_over_the_limit_sent_in_chunks_is_a_413(served: dict[str, Any]) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"model": "fast", "messages": [{"role": "user", "content": "'
        for _ in range(9):
            yield b"x" * (1 << 20)
        yield b'"}]}'

    answer = httpx.post(
        served["base"] + "/chat/completions",
        content=pieces(),
        headers={"authorization": f"Bearer {served['key']}"},
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
