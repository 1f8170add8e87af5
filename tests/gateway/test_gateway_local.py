"""The local provider driven directly: a tiny transformers GPT-2 with random weights (seeded)
and all-MiniLM-L6-v2's tokenizer, generating real tokens in a thread bridged to an async
iterator. What it streams, where it stops (max_tokens, stop sequences, the end token),
what closing a stream early does to generation, and its embeddings."""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.errors import ConfigError
from conveyor.gateway.providers.local import TOKENS_AHEAD, LocalProvider
from conveyor.gateway.types import Chunk, Deployment, Provider, UpstreamError
from fresh_python import loaded_of

TINY = Deployment("local/tiny", "local", "tiny")
SETTINGS = {"layers": 2, "hidden": 64, "heads": 2, "context": 256, "seed": 0}


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    local = LocalProvider(SETTINGS)
    yield local
    asyncio.run(local.aclose())


def ask(text: str = "Tell me about the sea", **fields: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": text}], **fields}


def stream(provider: LocalProvider, body: dict[str, Any]) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        return [c.data async for c in provider.stream(body, TINY)]

    return asyncio.run(main())


def chat(provider: LocalProvider, body: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(provider.chat(body, TINY))


def content(answer: dict[str, Any], index: int = 0) -> str:
    return answer["choices"][index]["message"]["content"]  # type: ignore[no-any-return]


def generating_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "conveyor-local-llm"]


def test_the_provider_module_imports_neither_torch_nor_transformers() -> None:
    code = "import conveyor.gateway.providers.local"
    assert loaded_of(("torch", "transformers", "tokenizers"), code) == []


def test_it_streams_real_tokens_up_to_max_tokens(provider: LocalProvider) -> None:
    assert isinstance(provider, Provider)
    body = ask(max_tokens=12, temperature=0.8, stream_options={"include_usage": True})
    chunks = stream(provider, body)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "tiny" for c in chunks)
    pieces = [Chunk(c).text() for c in chunks[1:-2]]
    assert 1 <= len(pieces) <= 12 and all(pieces)
    text = "".join(pieces)
    assert "[" not in text  # bracketed tokens ([PAD], [unused3]) are never sampled
    words = text.split()
    assert len(words) >= 3
    model = asyncio.run(provider.model(TINY))
    vocabulary = model.tokenizer.get_vocab()
    # Real tokens of the tokenizer: every word re-encodes to known, non-[UNK] ids.
    assert all(vocabulary.get(word) or model.encode(word) for word in words)
    assert vocabulary["[UNK]"] not in model.encode(text)
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length"}
    usage = chunks[-1]["usage"]
    prompt = model.encode("user: Tell me about the sea\nassistant:")
    assert chunks[-1]["choices"] == []
    assert usage == {
        "prompt_tokens": len(prompt) + 1,  # and the [CLS] it starts with
        "completion_tokens": 12,
        "total_tokens": len(prompt) + 13,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    # Without include_usage, no usage chunk.
    plain = stream(provider, ask(max_tokens=3))
    assert all("usage" not in c for c in plain)
    assert plain[-1]["choices"][0]["finish_reason"] == "length"


def test_greedy_decoding_with_the_cache_matches_full_recomputation(provider: LocalProvider) -> None:
    import torch

    answer = chat(provider, ask(max_tokens=8, temperature=0))
    model = asyncio.run(provider.model(TINY))
    ids = model.prompt(ask()["messages"])
    generated: list[int] = []
    with torch.inference_mode():
        for _ in range(8):  # no key-value cache: the whole sequence each step
            logits = model.model(input_ids=torch.tensor([ids + generated])).logits[0, -1]
            logits[model.banned] = float("-inf")
            generated.append(int(logits.argmax()))
    assert content(answer) == model.decode(generated)
    assert answer["usage"]["completion_tokens"] == 8
    assert chat(provider, ask(max_tokens=8, temperature=0))["choices"] == answer["choices"]


def test_the_seed_fixes_sampling(provider: LocalProvider) -> None:
    first = content(chat(provider, ask(max_tokens=10, temperature=1.0, seed=7)))
    again = content(chat(provider, ask(max_tokens=10, temperature=1.0, seed=7)))
    other = content(chat(provider, ask(max_tokens=10, temperature=1.0, seed=8)))
    assert first == again
    assert first != other
    two = chat(provider, ask(max_tokens=10, temperature=1.0, seed=7, n=2))
    assert [c["index"] for c in two["choices"]] == [0, 1]
    assert content(two, 0) == first  # choice i samples with seed + i
    assert content(two, 1) == other
    assert two["usage"]["completion_tokens"] == 20


def test_a_stop_sequence_ends_the_answer_before_it(provider: LocalProvider) -> None:
    full = content(chat(provider, ask(max_tokens=20, temperature=1.0, seed=3)))
    words = full.split()
    stop = words[3]
    expected = full[: full.find(stop)]
    answer = chat(provider, ask(max_tokens=20, temperature=1.0, seed=3, stop=[stop, "zzzzqqq"]))
    assert content(answer) == expected
    assert stop not in content(answer)
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] < 20  # generation stopped there
    chunks = stream(provider, ask(max_tokens=20, temperature=1.0, seed=3, stop=stop))
    assert "".join(Chunk(c).text() for c in chunks) == expected


def test_closing_the_stream_stops_generation(provider: LocalProvider) -> None:
    body = ask(max_tokens=200, temperature=1.0)

    async def main() -> tuple[int, int]:
        before = provider.tokens_generated
        chunks = provider.stream(body, TINY)
        for _ in range(4):  # the role chunk and three tokens' text
            await anext(chunks)
        # A slow reader, on purpose: an unthrottled thread would generate the 200 tokens
        # meanwhile (a few ms each).
        await asyncio.sleep(0.3)
        await chunks.aclose()
        return before, provider.tokens_generated

    before, after = asyncio.run(main())
    assert not generating_threads()  # aclose waited for the thread to stop
    # Three tokens read; the thread ran at most TOKENS_AHEAD ahead, plus the one it was
    # computing when the stream closed. Of the 200 asked.
    assert 3 <= after - before <= 3 + TOKENS_AHEAD + 1
    assert provider.tokens_generated == after


def test_embeddings_are_deterministic_mean_pooled_states(provider: LocalProvider) -> None:
    body = {"model": "tiny", "input": ["the quick brown fox", "a lazy dog", "the quick brown fox"]}
    answer = asyncio.run(provider.embeddings(body, TINY))
    vectors = [d["embedding"] for d in answer["data"]]
    assert [d["index"] for d in answer["data"]] == [0, 1, 2]
    assert all(len(v) == 64 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-5 for v in vectors)
    model = asyncio.run(provider.model(TINY))
    tokens = sum(len(model.encode(t)) for t in body["input"])
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    packed = asyncio.run(
        provider.embeddings({"input": "a lazy dog", "encoding_format": "base64"}, TINY)
    )
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert list(struct.unpack("<64f", raw)) == pytest.approx(vectors[1], abs=1e-6)


def test_bad_requests_and_settings(provider: LocalProvider) -> None:
    cases = [
        (provider.chat, ask("word " * 300)),  # longer than the 256-token context
        (provider.chat, ask(n=0)),
        (provider.chat, {"model": "tiny", "messages": []}),
        (provider.embeddings, {"input": [{"not": "text"}]}),
        (provider.embeddings, {"input": "x", "dimensions": 32}),
    ]
    for call, body in cases:
        with pytest.raises(UpstreamError) as info:  # noqa: PT012
            asyncio.run(call(body, TINY))
            pytest.fail(f"no error for {body}")
        assert info.value.kind == "bad_request"
        assert info.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(ConfigError, match="layerz"):
        LocalProvider({"layerz": 2})
    with pytest.raises(ConfigError, match="multiple of heads"):
        asyncio.run(LocalProvider({"hidden": 65, "heads": 2}).model(TINY))
    with pytest.raises(ConfigError, match="no tokenizer file"):
        asyncio.run(LocalProvider({"tokenizer": "/nonexistent/tokenizer.json"}).model(TINY))


def test_a_llama_deployment_is_another_model(provider: LocalProvider) -> None:
    llama = Deployment("local/llama", "local", "tiny-llama", options={"model": {"arch": "llama"}})
    answer = asyncio.run(provider.chat(ask(max_tokens=5, temperature=0), llama))
    assert answer["model"] == "tiny-llama"
    assert answer["usage"]["completion_tokens"] == 5
    assert content(answer) != content(chat(provider, ask(max_tokens=5, temperature=0)))
    assert type(asyncio.run(provider.model(llama)).model).__name__ == "LlamaForCausalLM"
