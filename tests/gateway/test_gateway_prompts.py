"""Prompt templates and the prefix report through the served gateway with the openai
client: a template puts the system prompt, then the documents in a stable order, then the
conversation, so two calls with the same documents in another order send the upstream the
same prefix (the fake upstream's prompt cache serves the second); the extension never
reaches the upstream; bad extensions are 400s naming the field; ``conveyor llm prefixes``
and ``GET /v1/llm/prefixes`` say how often each prefix was served from the cache."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from gateway_api_support import calls, gateway_spec, served_gateway

from conveyor.gateway.prompts import prefix_of


def _spec(fake_url: str) -> dict[str, Any]:
    spec = gateway_spec(fake_url)
    spec["prompts"] = {
        "support": {
            "system": "You are the support assistant. Answer from the documents only.",
            "max_documents": 3,
        },
        "as-given": {"system": "Keep the ranking.", "context_order": "given"},
    }
    return spec


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_gateway(tmp_path_factory.mktemp("gwprompts"), _spec) as found:
        yield found


def _client(served: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=served["base"], api_key=served["key"], max_retries=0)


def _ask(served: dict[str, Any], question: str, extension: Any, model: str = "via-a") -> Any:
    return _client(served).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        extra_body={"conveyor": extension},
    )


def test_a_template_forms_a_stable_prefix_the_upstream_cache_reuses(
    served: dict[str, Any],
) -> None:
    fake = served["fake"]
    tag = uuid.uuid4().hex  # documents of this test only: the fake's cache has not seen them
    returns = {"id": "returns.md#1", "text": f"Items can be returned within 30 days. {tag}"}
    refunds = {"id": "refunds.md#1", "text": f"Refunds take 5 working days. {tag}"}
    first = _ask(
        served, "How do I return an item?", {"prompt": "support", "context": [returns, refunds]}
    )
    sent = fake.requests[-1]
    assert "conveyor" not in sent  # the extension never reaches the upstream
    assert sent["messages"] == [
        {
            "role": "system",
            "content": "You are the support assistant. Answer from the documents only.",
        },
        {
            "role": "system",
            "name": "context",
            "content": f"Documents:\n\n[refunds.md#1] {refunds['text']}\n\n"
            f"[returns.md#1] {returns['text']}",
        },
        {"role": "user", "content": "How do I return an item?"},
    ]
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # the same documents ranked the other way round: the same prefix, served from the cache
    second = _ask(served, "And refunds?", {"prompt": "support", "context": [refunds, returns]})
    assert fake.requests[-1]["messages"][:2] == sent["messages"][:2]
    assert second.usage.prompt_tokens_details.cached_tokens > 0
    events = calls(served, "via-a", 2)
    assert [e["prompt"] for e in events] == ["support", "support"]
    assert events[0]["prefix"] == events[1]["prefix"] == prefix_of(sent)[0]
    assert events[0]["prefix_tokens"] > 10
    assert events[1]["cached_tokens"] == second.usage.prompt_tokens_details.cached_tokens
    # "given" keeps the order it was sent in; plain strings are numbered
    _ask(served, "Which first?", {"prompt": "as-given", "context": ["second", "first"]})
    assert fake.requests[-1]["messages"][1]["content"] == "Documents:\n\n[1] second\n\n[2] first"


def test_the_prefix_report_over_the_cli_and_http(served: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    import conveyor.cli  # noqa: F401  (the CLI loads before a capability's CLI module)
    from conveyor.gateway.cli import llm_app

    system = f"You answer in French. {uuid.uuid4().hex}"
    client = _client(served)
    for question in ("One?", "Two?", "Three?"):
        client.chat.completions.create(
            model="b",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        )
    prefix = prefix_of({"messages": [{"role": "system", "content": system}]})[0]
    calls(served, "b", 3)
    done = CliRunner().invoke(
        llm_app, ["prefixes", "--model", "b", "--json", "-C", str(served["project"].root)]
    )
    assert done.exit_code == 0, done.output
    (row,) = [r for r in json.loads(done.stdout)["items"] if r["prefix"] == prefix]
    assert row["calls"] == 3 and row["cached_calls"] == 2 and row["hit_rate"] == 1.0
    assert row["prompt"] is None and row["deployments"] == ["b"]
    assert 0 < row["cached_share"] < 1
    table = CliRunner().invoke(llm_app, ["prefixes", "-C", str(served["project"].root)])
    assert table.exit_code == 0 and prefix in table.output, table.output
    headers = {"authorization": f"Bearer {served['viewer']}"}
    over_http = httpx.get(f"{served['url']}/v1/llm/prefixes?model=b", headers=headers)
    assert over_http.status_code == 200, over_http.text
    assert row in over_http.json()["prefixes"]
    assert httpx.get(f"{served['url']}/v1/llm/prefixes").status_code == 401


@pytest.mark.parametrize(
    ("extension", "param", "says"),
    [
        ({"prompt": "nope"}, "conveyor.prompt", "no prompt template 'nope'"),
        ({"context": ["x"]}, "conveyor.prompt", "names a template"),
        ("support", "conveyor", "is an object"),
        ({"prompt": "support", "colour": 1}, "conveyor", "no field 'colour'"),
        ({"prompt": "support", "context": "text"}, "conveyor.context", "a list of documents"),
        ({"prompt": "support", "context": [{"id": 1}]}, "conveyor.context[0]", "{id, text}"),
        ({"prompt": "support", "context": ["a", "b", "c", "d"]}, "conveyor.context", "at most 3"),
    ],
)
def test_a_bad_extension_is_a_400_naming_its_field(
    served: dict[str, Any], extension: Any, param: str, says: str
) -> None:
    before = len(served["fake"].requests)
    with pytest.raises(openai.BadRequestError) as refused:
        _ask(served, "Hi", extension)
    body: Any = refused.value.body
    assert body["param"] == param and says in body["message"], body
    assert len(served["fake"].requests) == before  # nothing went upstream
