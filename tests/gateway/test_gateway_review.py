"""The review queue through the served gateway: a flagged answer (or prompt, streamed or
not) held, the caller given a stable pending-review answer the openai client takes; the
queue read and decided over HTTP and the CLI, once, with who and when recorded and the
rating counted as a human score; every route and command refused to the roles below
deployer."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from gateway_api_support import calls, gateway_spec, served_gateway
from typer.testing import CliRunner

import conveyor.cli  # noqa: F401  (a capability's CLI module loads after the CLI, as for all)
from conveyor.gateway.review_cli import review_app
from conveyor.governance.keys import ApiKeys
from conveyor.guardrails.policy import register
from conveyor.guardrails.review import pending_message
from conveyor.guardrails.types import Finding
from conveyor.testing.wait import wait_until

CARD = "4111 1111 1111 1111"


class _Legal:
    """The word "lawsuit": a topic a human should look at."""

    name = "legal"

    def scan(self, text: str) -> list[Finding]:
        return [
            Finding(self.name, "LEGAL", m.start(), m.end())
            for m in re.finditer(r"\blawsuits?\b", text, re.I)
        ]


register("legal", lambda settings: _Legal())


def _spec(fake_url: str) -> dict[str, Any]:
    spec = gateway_spec(fake_url)
    spec["guardrails"] = {
        "policies": {
            "answers": [{"detector": "legal", "where": "output", "action": "flag"}],
            "prompts": [
                {"detector": "pii", "where": "input", "action": "redact"},
                {"detector": "legal", "where": "input", "action": "flag"},
            ],
        },
        "models": {"via-a": "answers", "fast": "prompts"},
    }
    return spec


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_gateway(tmp_path_factory.mktemp("gwreview"), _spec) as found:
        reviewer, _ = ApiKeys(found["project"].store, found["project"].events).create(
            "reviewer", "deployer"
        )
        client = openai.OpenAI(base_url=found["base"], api_key=found["key"], max_retries=0)
        yield {**found, "client": client, "reviewer": reviewer}
        client.close()


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _http(served: dict[str, Any], method: str, path: str, token: str | None, **kw: Any) -> Any:
    headers = {} if token is None else {"x-api-key": token}
    return httpx.request(method, served["url"] + path, headers=headers, timeout=10, **kw)


def _events(served: dict[str, Any], kind: str, request_id: str | None) -> list[Any]:
    project = served["project"]

    def found() -> list[Any] | None:
        project.events.flush()
        hits = [
            e
            for e in project.events.query(kind=kind, limit=1000).items
            if request_id is None or e.request_id == request_id
        ]
        return hits or None

    return wait_until(found, message=f"{kind} events", timeout=10)


def test_a_flagged_answer_is_held_and_the_caller_gets_a_pending_answer(
    served: dict[str, Any],
) -> None:
    raw = served["client"].chat.completions.with_raw_response.create(
        model="via-a", messages=_user("we will file a lawsuit tomorrow")
    )
    answer = raw.parse()  # the openai client takes it as any completion
    review_id = raw.headers["x-conveyor-review"]
    assert review_id.startswith("rv_")
    assert answer.choices[0].message.content == pending_message(review_id)
    assert answer.choices[0].finish_reason == "content_filter"
    assert answer.model_extra["review"] == {"id": review_id, "status": "pending"}
    assert answer.usage is not None and answer.usage.completion_tokens > 0  # it was answered
    (event,) = calls(served, "via-a", 1)
    assert event["review"] == review_id and event["status"] == "ok"
    review = _http(served, "GET", f"/v1/reviews/{review_id}", served["reviewer"]).json()
    assert review["status"] == "pending" and review["checks"] == ["legal"]
    assert review["answers"] == ["echo: we will file a lawsuit tomorrow"]
    assert review["messages"] == _user("we will file a lawsuit tomorrow")
    assert review["request_id"] == raw.headers["x-request-id"] and review["key"] == "app"
    (queued,) = _events(served, "guardrail.review_queued", raw.headers["x-request-id"])
    assert queued.payload["review_id"] == review_id


def test_a_stream_flagged_midway_ends_with_the_pending_sentence(served: dict[str, Any]) -> None:
    parts, finish = [], None
    for chunk in served["client"].chat.completions.create(
        model="via-a", messages=_user("nothing to see then a lawsuit and more"), stream=True
    ):
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    text = "".join(parts)
    assert finish == "content_filter" and "lawsuit" not in text
    found = re.search(r"review (rv_[0-9a-f]+)", text)
    assert found is not None and text.endswith(pending_message(found.group(1)))
    review = _http(served, "GET", f"/v1/reviews/{found.group(1)}", served["reviewer"]).json()
    assert review["stream"] and "lawsuit" in review["answers"][0]


def test_a_flagged_prompt_streamed_is_answered_once_with_the_pending_sentence(
    served: dict[str, Any],
) -> None:
    chunks = list(
        served["client"].chat.completions.create(
            model="fast",
            messages=_user(f"my card {CARD}: can I start a lawsuit?"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices]
    (sentence,) = texts  # no word of the answer, one chunk saying why
    found = re.search(r"rv_[0-9a-f]+", sentence or "")
    assert found is not None and sentence == pending_message(found.group())
    assert chunks[0].model_extra["review"] == {"id": found.group(), "status": "pending"}
    assert chunks[-1].usage is not None and chunks[-1].choices == []  # usage still last
    review = _http(served, "GET", f"/v1/reviews/{found.group()}", served["reviewer"]).json()
    # kept as it went upstream: the pseudonym, never the number
    assert review["messages"] == _user("my card <CREDIT_CARD_1>: can I start a lawsuit?")
    assert review["answers"] == ["echo: my card <CREDIT_CARD_1>: can I start a lawsuit?"]
    assert CARD not in str(review)


def _held(served: dict[str, Any]) -> str:
    raw = served["client"].chat.completions.with_raw_response.create(
        model="via-a", messages=_user("a lawsuit again")
    )
    return str(raw.headers["x-conveyor-review"])


def test_a_reviewer_approves_over_http_once_and_the_rating_is_a_human_score(
    served: dict[str, Any],
) -> None:
    review_id = _held(served)
    pending = _http(served, "GET", "/v1/reviews", served["reviewer"]).json()["items"]
    assert review_id in [r["id"] for r in pending]
    assert "messages" not in pending[0]  # the list leaves the conversations out
    done = _http(
        served,
        "POST",
        f"/v1/reviews/{review_id}/approve",
        served["reviewer"],
        json={"rating": 4, "comment": "a false alarm"},
    )
    assert done.status_code == 200, done.text
    review = done.json()
    assert review["status"] == "approved" and review["reviewer"] == "key:reviewer"
    assert (review["rating"], review["score"]) == ("4", 0.75) and review["reviewed_at"]
    again = _http(served, "POST", f"/v1/reviews/{review_id}/reject", served["reviewer"])
    assert again.status_code == 409 and "approved already" in again.json()["message"]
    gone = _http(served, "GET", "/v1/reviews", served["reviewer"]).json()["items"]
    assert review_id not in [r["id"] for r in gone]
    approved = _http(served, "GET", "/v1/reviews?status=approved", served["reviewer"]).json()
    assert review_id in [r["id"] for r in approved["items"]]
    (audit,) = [
        e
        for e in _events(served, "guardrail.reviewed", None)
        if e.payload["review_id"] == review_id
    ]
    assert audit.actor == "key:reviewer" and audit.payload["verdict"] == "approved"
    quality = _http(served, "GET", "/v1/llm/quality?model=via-a", served["admin"]).json()
    (row,) = quality["models"]
    assert row["scored"] >= 1 and row["mean_score"] is not None
    bad = _http(
        served,
        "POST",
        f"/v1/reviews/{_held(served)}/reject",
        served["reviewer"],
        json={"rating": 9},
    )
    assert bad.status_code == 422 and "rating" in bad.text
    missing = _http(served, "POST", "/v1/reviews/rv_nope/approve", served["reviewer"])
    assert missing.status_code == 404


def _cli(served: dict[str, Any], token: str, *args: str) -> Any:
    root = str(served["project"].root)
    return CliRunner().invoke(
        review_app, [*args, "-C", root], env={"CONVEYOR_API_KEY": token}, catch_exceptions=False
    )


def test_a_reviewer_lists_shows_approves_and_rejects_from_the_cli(
    served: dict[str, Any],
) -> None:
    review_id = _held(served)
    listed = _cli(served, served["reviewer"], "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert review_id in [r["id"] for r in json.loads(listed.output)["items"]]
    shown = _cli(served, served["reviewer"], "show", review_id)
    assert shown.exit_code == 0 and "[answer 0] echo: a lawsuit again" in shown.output
    other = _held(served)
    approved = _cli(served, served["reviewer"], "approve", other, "--rating", "up", "--json")
    assert approved.exit_code == 0, approved.output
    assert json.loads(approved.output)["status"] == "approved"
    assert json.loads(approved.output)["reviewer"] == "key:reviewer"
    done = _cli(served, served["reviewer"], "reject", review_id, "--rating", "down")
    assert done.exit_code == 0, done.output
    assert f"{review_id} rejected by key:reviewer (rated down)" in done.output
    review = _http(served, "GET", f"/v1/reviews/{review_id}", served["reviewer"]).json()
    assert (review["status"], review["score"]) == ("rejected", 0.0)
    twice = _cli(served, served["reviewer"], "approve", review_id)
    assert twice.exit_code == 1 and "rejected already" in twice.output


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("viewer", 403), ("key", 403), ("reviewer", 200), ("admin", 200)],
)
def test_only_a_deployer_and_up_reads_or_decides_reviews(
    served: dict[str, Any], who: str | None, status: int
) -> None:
    token = None if who is None else served[who]
    review_id = _held(served)
    assert _http(served, "GET", "/v1/reviews", token).status_code == status
    assert _http(served, "GET", f"/v1/reviews/{review_id}", token).status_code == status
    decided = _http(served, "POST", f"/v1/reviews/{review_id}/approve", token)
    assert decided.status_code == status
    if status == 403:
        assert decided.json()["action"] == "llm.review"
        refused = _cli(served, token, "approve", review_id)  # type: ignore[arg-type]
        assert refused.exit_code == 1 and "needs the role 'deployer'" in refused.output
