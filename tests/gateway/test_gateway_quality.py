"""Generation quality: ROUGE as Google's rouge-score computes it, BLEU as sacrebleu does;
feedback on a live call (human score, reference) through the served API, the per-model
report over HTTP and the CLI, and an evaluation set run through the routing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sacrebleu
from gateway_api_support import calls, served_gateway
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from typer.testing import CliRunner

import conveyor.cli  # noqa: F401  (a capability's CLI module loads after the CLI, as for all)
from conveyor.errors import InvalidInputError
from conveyor.gateway.cli import llm_app
from conveyor.gateway.quality import bleu, check_feedback, rouge

_WORDS = st.sampled_from(["the", "cat", "sat", "on", "a", "mat", "Dog", "ran", "42", "mat."])
_TEXT = st.lists(_WORDS, max_size=25).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(_TEXT, _TEXT)
def test_rouge_agrees_with_rouge_score(candidate: str, reference: str) -> None:
    oracle = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"]).score(reference, candidate)
    ours = rouge(candidate, reference)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert ours[name] == pytest.approx(oracle[name].fmeasure, abs=1e-12), name


def test_bleu_is_sacrebleus_sentence_score_for_one_pair_and_corpus_score_for_many() -> None:
    pairs = [("the cat sat on the mat", "the cat was on the mat"), ("a dog ran", "the dog ran")]
    one = sacrebleu.sentence_bleu(pairs[0][0], [pairs[0][1]]).score
    corpus = sacrebleu.corpus_bleu([c for c, _ in pairs], [[r for _, r in pairs]]).score
    assert bleu([pairs[0][0]], [pairs[0][1]]) == pytest.approx(one)
    assert bleu([c for c, _ in pairs], [r for _, r in pairs]) == pytest.approx(corpus)
    assert one != pytest.approx(corpus)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"score": 1}, "request_id"),
        ({"request_id": "r", "score": 1.5}, "score"),
        ({"request_id": "r", "score": True}, "score"),
        ({"request_id": "r"}, "score"),
        ({"request_id": "r", "reference": "x"}, "answer"),
        ({"request_id": "r", "score": 1, "label": 1}, "label"),
    ],
)
def test_a_malformed_feedback_record_is_refused_naming_its_field(
    record: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_feedback(record)
    assert caught.value.context["field"] == field


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_gateway(tmp_path_factory.mktemp("gwquality")) as found:
        yield found


def test_feedback_on_a_call_is_scored_and_reported_per_model(served: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=served["base"], api_key=served["key"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "the cat sat on the mat"}]
    )
    answer = raw.parse().choices[0].message.content
    request_id = raw.headers["x-request-id"]
    calls(served, "fast")
    reference = "the cat was on the mat"
    headers = {"authorization": f"Bearer {served['key']}"}
    with httpx.Client(base_url=served["url"], timeout=20) as http:
        sent = http.post(
            "/v1/llm/feedback",
            json=[
                {"request_id": request_id, "score": 0.75, "reference": reference, "answer": answer},
                {"request_id": request_id, "score": 0.25},
            ],
            headers=headers,
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["recorded"] == 2
        bad = http.post("/v1/llm/feedback", json={"request_id": "x", "score": 7}, headers=headers)
        assert bad.status_code == 422 and bad.json()["field"] == "score"
        viewer = {"authorization": f"Bearer {served['viewer']}"}
        refused = http.post(
            "/v1/llm/feedback", json={"request_id": request_id, "score": 1}, headers=viewer
        )
        assert refused.status_code == 403
        report = http.get("/v1/llm/quality", params={"model": "fast"}, headers=viewer)
    assert report.status_code == 200, report.text
    (row,) = report.json()["models"]
    expected = rouge(answer, reference)
    assert row["model"] == "fast" and row["calls"] >= 1
    assert row["feedback"] == 2 and row["scored"] == 2 and row["mean_score"] == 0.5
    assert row["with_reference"] == 1
    assert row["rougeL"] == pytest.approx(expected["rougeL"], abs=1e-4)
    assert row["bleu"] == pytest.approx(bleu([answer], [reference]), abs=1e-3)
    events = served["project"].events.query(kind="llm.feedback", request_id=request_id).items
    assert {e.subject for e in events} == {"fast"}  # the model of the call it judges


def test_llm_eval_scores_a_set_and_records_it(served: dict[str, Any], tmp_path: Path) -> None:
    # The fake upstream answers "echo: <the prompt>": one reference matches word for word.
    examples = [
        {"id": "same", "prompt": "hello there", "reference": "echo: hello there"},
        {"id": "other", "prompt": "hello there", "reference": "completely unrelated words"},
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in examples) + "\n")
    root = str(served["project"].root)
    runner = CliRunner()
    done = runner.invoke(
        llm_app,
        ["eval", "fast", str(path), "--json", "-C", root],
        env={"CONVEYOR_API_KEY": served["admin"]},
    )
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    rows = {r["id"]: r for r in result["rows"]}
    assert rows["same"]["rougeL"] == 1.0 and rows["other"]["rougeL"] == 0.0
    assert result["summary"]["rougeL"] == 0.5 and result["summary"]["answered"] == 2
    failing = runner.invoke(
        llm_app,
        ["eval", "fast", str(path), "--min-rouge-l", "0.9", "-C", root],
        env={"CONVEYOR_API_KEY": served["admin"]},
    )
    assert failing.exit_code == 1
    served["project"].events.flush()
    recorded = served["project"].events.query(kind="llm.eval", subject="fast").items
    assert len(recorded) == 2 and recorded[0].payload["rougeL"] == 0.5
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "no reference"}\n')
    refused = runner.invoke(
        llm_app,
        ["eval", "fast", str(broken), "-C", root],
        env={"CONVEYOR_API_KEY": served["admin"]},
    )
    assert refused.exit_code != 0 and "broken.jsonl:1" in " ".join(refused.output.split())
