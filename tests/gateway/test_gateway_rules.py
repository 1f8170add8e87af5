"""Routing rules through the served gateway, with the openai client: an alias's rules send
a request by its team, tier, key or role, or by its prompt's complexity (complex to the
smart alias, simple to the fast one), first match wins; the rule and the complexity are in
llm.call, the prompt classified only when a rule asks; a spec with a bad rule is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from gateway_api_support import calls, served_gateway

from conveyor.gateway.settings import GatewaySpec

HARD = (
    "Write a Python function that merges overlapping intervals. Include unit tests and "
    "explain its time complexity."
)
EASY = "What is the capital of Chile?"


def _spec(fake_url: str) -> dict[str, Any]:
    names = ("cheap", "big", "lab", "gold", "vip", "ops")
    return {
        "providers": {"fake": {"kind": "openai", "base_url": fake_url + "/v1"}},
        "deployments": {n: {"provider": "fake", "model": f"gpt-{n}"} for n in names},
        "models": {
            "fast": ["cheap"],
            "smart": ["big"],
            "chat": {
                "deployments": ["cheap", "big"],
                "rules": [
                    {"name": "research", "when": {"teams": ["research", "lab"]}, "to": "labs"},
                    {"name": "gold", "when": {"tiers": ["gold"], "teams": ["sales"]},
                     "deployments": ["gold", "cheap"]},
                    {"name": "vip", "when": {"keys": ["vip"]}, "deployments": ["vip"]},
                    {"name": "ops", "when": {"roles": ["admin"]}, "deployments": ["ops"]},
                    {"name": "hard", "when": {"complexity": "complex"}, "to": "smart"},
                    {"name": "easy", "when": {"complexity": "simple"}, "to": "fast"},
                ],
            },
            "labs": ["lab"],
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_gateway(tmp_path_factory.mktemp("gwrules"), _spec, predictors=("vip",)) as found:
        yield found


def _ask(
    served: dict[str, Any],
    text: str,
    *,
    key: str = "key",
    headers: dict[str, str] | None = None,
    stream: bool = False,
) -> str:
    with openai.OpenAI(base_url=served["base"], api_key=served[key], max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": text},
            ],
            extra_headers=headers,
            stream=stream,
        )
        if stream:
            for _ in raw.parse():
                pass
        deployment: str = raw.headers["x-conveyor-deployment"]
        return deployment


def test_complex_prompts_go_to_the_smart_alias_and_simple_ones_to_the_fast(
    served: dict[str, Any],
) -> None:
    assert _ask(served, HARD) == "big"
    assert _ask(served, EASY) == "cheap"
    assert _ask(served, HARD, stream=True) == "big"
    hard, easy, streamed = calls(served, "chat", 3)
    assert hard["route_rule"] == "hard" and hard["complexity"] == "complex"
    assert hard["complexity_score"] > 0.5
    assert easy["route_rule"] == "easy" and easy["complexity"] == "simple"
    assert easy["complexity_score"] < 0.5
    assert streamed["route_rule"] == "hard" and streamed["deployment"] == "big"


def test_team_tier_key_and_role_rules_come_first(served: dict[str, Any]) -> None:
    assert _ask(served, EASY, headers={"x-conveyor-team": "lab"}) == "lab"
    # gold needs the tier and the team: the tier alone is not enough
    assert _ask(served, HARD, headers={"x-conveyor-tier": "gold"}) == "big"
    both = {"x-conveyor-tier": "gold", "x-conveyor-team": "sales"}
    assert _ask(served, HARD, headers=both) == "gold"
    assert _ask(served, HARD, key="vip") == "vip"
    assert _ask(served, EASY, key="admin") == "ops"
    lab, tier_only, gold, vip, ops = calls(served, "chat", 5)
    assert lab["route_rule"] == "research" and lab["team"] == "lab"
    assert lab["complexity"] is None  # a rule before any complexity rule matched
    assert tier_only["route_rule"] == "hard"
    assert gold["route_rule"] == "gold" and gold["complexity"] is None
    assert vip["route_rule"] == "vip" and vip["key"] == "vip"
    assert ops["route_rule"] == "ops"


def test_embeddings_never_match_a_complexity_rule(served: dict[str, Any]) -> None:
    with openai.OpenAI(base_url=served["base"], api_key=served["key"], max_retries=0) as client:
        raw = client.embeddings.with_raw_response.create(model="chat", input=HARD)
    assert raw.headers["x-conveyor-deployment"] == "cheap"  # the alias's own first
    (event,) = calls(served, "chat", 1)
    assert event["endpoint"] == "embeddings"
    assert event["route_rule"] is None and event["complexity"] is None


def test_the_models_list_shows_an_alias_rules(served: dict[str, Any]) -> None:
    with openai.OpenAI(base_url=served["base"], api_key=served["key"], max_retries=0) as client:
        found = client.models.retrieve("chat").model_dump()
    assert [r["name"] for r in found["rules"]] == ["research", "gold", "vip", "ops", "hard", "easy"]
    assert found["rules"][4] == {"name": "hard", "when": {"complexity": "complex"}, "to": "smart"}


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"when": {}, "to": "chat"}, "sends to the alias itself"),
        ({"when": {}, "to": "nowhere"}, "sends to 'nowhere', not an alias"),
        ({"when": {}, "deployments": ["nope"]}, "no deployment 'nope'"),
        ({"when": {}}, "'to') or to 'deployments', one"),
        ({"when": {"complexity": "medium"}, "to": "fast"}, "complexity"),
        ({"when": {"tier": ["gold"]}, "to": "fast"}, "tier"),
        (
            {"when": {}, "deployments": ["a"], "weights": {"b": 1}},
            "'b' is not one of the deployments",
        ),
    ],
)
def test_a_bad_rule_in_the_spec_is_refused_naming_it(rule: dict[str, Any], error: str) -> None:
    spec: dict[str, Any] = {
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
        "deployments": {"a": {"provider": "p", "model": "m"}},
        "models": {"fast": ["a"], "chat": {"deployments": ["a"], "rules": [rule]}},
    }
    with pytest.raises(ValueError) as caught:
        GatewaySpec.model_validate(spec)
    assert error in str(caught.value)
