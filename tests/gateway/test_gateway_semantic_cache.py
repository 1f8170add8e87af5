"""The semantic cache through the served gateway with the openai client and the real
default encoder (all-MiniLM-L6-v2 on ONNX Runtime): a paraphrase in the same context is
answered from the cache, plain or streamed; an unrelated question, another tenant, another
system prompt or conversation, and a sampling request are not; an entry whose answer
expired is forgotten. And the index on its own: threshold, eviction, the split of a
request into context and question."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import openai
import pytest
from gateway_api_support import calls, gateway_spec, served_gateway

from conveyor.gateway.semantic import SemanticIndex, SemanticSpec, split_question


def _spec(fake_url: str) -> dict[str, Any]:
    spec = gateway_spec(fake_url)
    spec["cache"] = {"exact": True, "ttl_s": 3, "semantic": {"threshold": 0.9}}
    spec["prices"] = {"a": {"input": 1.0, "output": 1.0}}
    return spec


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_gateway(
        tmp_path_factory.mktemp("gwsemantic"), _spec, predictors=("one", "two")
    ) as found:
        yield found


def _client(served: dict[str, Any], key: str = "one") -> openai.OpenAI:
    return openai.OpenAI(base_url=served["base"], api_key=served[key], max_retries=0)


def _ask(client: openai.OpenAI, text: str, *, system: str | None = None, **extra: Any) -> Any:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return client.chat.completions.with_raw_response.create(
        model="via-a", messages=messages, **extra
    )


def _content(answer: Any) -> str:
    return str(answer.parse().choices[0].message.content)


def test_a_paraphrase_is_answered_from_the_cache(served: dict[str, Any]) -> None:
    fake, client = served["fake"], _client(served)
    system = f"You answer geography questions. {uuid.uuid4().hex}"  # a context of its own
    before = len(fake.requests)
    first = _ask(client, "What is the capital of France?", system=system, temperature=0)
    assert first.headers["x-conveyor-cache"] == "miss"
    again = _ask(client, "Which city is France's capital?", system=system, temperature=0)
    assert again.headers["x-conveyor-cache"] == "hit"
    # the fake echoes the question: the answer is the first question's, from the cache
    assert _content(again) == _content(first) == "echo: What is the capital of France?"
    assert len(fake.requests) == before + 1
    streamed = "".join(
        c.delta.content or ""
        for chunk in client.chat.completions.create(
            model="via-a",
            messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": "What's France's capital city?"},
            ],
            temperature=0,
            stream=True,
        )
        for c in chunk.choices
    )
    assert streamed == "echo: What is the capital of France?"
    assert len(fake.requests) == before + 1
    events = calls(served, "via-a", 3)
    assert [e["cache"] for e in events] == [None, "semantic", "semantic"]
    assert all(e["cache_similarity"] >= 0.9 for e in events[1:])
    assert events[0]["cost_usd"] > 0 and events[1]["cost_usd"] is None  # a hit costs nothing
    # an unrelated question in the same context reaches the upstream, and so does the same
    # question about another country (0.67 alike: a semantic cache's classic wrong answer)
    for text in ("How do I bake sourdough bread?", "What is the capital of Spain?"):
        other = _ask(client, text, system=system, temperature=0)
        assert other.headers["x-conveyor-cache"] == "miss"
        assert _content(other) == "echo: " + text
    assert len(fake.requests) == before + 3


def test_tenants_contexts_and_sampling_never_share(served: dict[str, Any]) -> None:
    fake = served["fake"]
    system = f"Geography. {uuid.uuid4().hex}"
    _ask(_client(served), "What is the capital of Spain?", system=system, temperature=0)
    before = len(fake.requests)
    paraphrase = "Which city is Spain's capital?"
    # another key: its own space
    theirs = _ask(_client(served, "two"), paraphrase, system=system, temperature=0)
    assert theirs.headers["x-conveyor-cache"] == "miss"
    assert _content(theirs) == "echo: " + paraphrase
    # another system prompt, another max_tokens, a conversation before the question
    assert (
        _ask(_client(served), paraphrase, system="History.", temperature=0).headers[
            "x-conveyor-cache"
        ]
        == "miss"
    )
    assert (
        _ask(_client(served), paraphrase, system=system, temperature=0, max_tokens=7).headers[
            "x-conveyor-cache"
        ]
        == "miss"
    )
    history = _client(served).chat.completions.with_raw_response.create(
        model="via-a",
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": paraphrase},
        ],
        temperature=0,
    )
    assert history.headers["x-conveyor-cache"] == "miss"
    # a sampling request is not looked up at all
    sampled = _ask(_client(served), paraphrase, system=system)
    assert "x-conveyor-cache" not in sampled.headers
    assert len(fake.requests) == before + 5
    # and the first key's own paraphrase still hits
    mine = _ask(_client(served), paraphrase, system=system, temperature=0)
    assert mine.headers["x-conveyor-cache"] == "hit"
    assert _content(mine) == "echo: What is the capital of Spain?"


def test_an_expired_answer_is_not_served(served: dict[str, Any]) -> None:
    client = _client(served)
    system = f"Geography. {uuid.uuid4().hex}"
    _ask(client, "What is the capital of Italy?", system=system, temperature=0)
    time.sleep(3.1)  # the cache's ttl_s
    late = _ask(client, "Which city is Italy's capital?", system=system, temperature=0)
    assert late.headers["x-conveyor-cache"] == "miss"
    assert _content(late) == "echo: Which city is Italy's capital?"


# -- the index and the split, on their own ------------------------------------------------


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)  # type: ignore[no-any-return]


def test_the_index_keeps_the_newest_and_answers_only_above_the_threshold() -> None:
    vectors = {"a": _unit(1, 0, 0), "b": _unit(0, 1, 0), "c": _unit(0, 0, 1)}
    index = SemanticIndex(
        SemanticSpec(threshold=0.95, max_entries=2), lambda texts: [vectors[t] for t in texts]
    )
    entries = {name: index.add("s", index.vector(name)) for name in "abc"}
    assert index.size() == 2  # "a" was evicted, the oldest
    assert index.find("s", vectors["a"]) is None
    found = index.find("s", vectors["b"])
    assert found is not None and found.entry == entries["b"] and found.similarity == 1.0
    assert index.find("s", _unit(0, 1, 0.5)) is None  # 0.89: below the threshold
    assert index.find("other", vectors["b"]) is None  # another space
    index.forget("s", entries["b"])
    assert index.find("s", vectors["b"]) is None and index.size() == 1
    assert index.embedded == 3


def test_a_request_splits_into_its_context_and_its_last_question() -> None:
    body = {
        "model": "m",
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "S"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}],
            },
        ],
    }
    split = split_question(body)
    assert split is not None
    context, question = split
    assert question == "Hi\nthere"
    assert context["messages"][-1] == {"role": "user", "content": None}
    assert context["messages"][0] == {"role": "system", "content": "S"}
    # two questions in the same context have the same context
    other = {**body, "messages": [body["messages"][0], {"role": "user", "content": "Hello"}]}
    assert SemanticIndex.space_of("t", split_question(other)[0]) == SemanticIndex.space_of(  # type: ignore[index]
        "t", context
    )
    # nothing to compare: an assistant's turn last, an image, an empty question
    assert split_question({"messages": [{"role": "assistant", "content": "x"}]}) is None
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    assert split_question({"messages": [{"role": "user", "content": [image]}]}) is None
    assert split_question({"messages": [{"role": "user", "content": "  "}]}) is None
    assert split_question({"messages": []}) is None
