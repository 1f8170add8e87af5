"""How good the generated answers are: BLEU and ROUGE against references, and human scores.

Two ways in, one report out:

- **Feedback on live calls.** The application that called the gateway sends, for a call's
  request id (the ``x-request-id`` every answer carries), a human score (0 to 1: a thumbs
  up is 1, a 4 out of 5 is 0.75) and, when it has one, the reference answer with the answer
  it received::

      POST /v1/llm/feedback
      {"request_id": "...", "score": 0.75, "reference": "...", "answer": "..."}

  Each record is an ``llm.feedback`` event (control: never dropped), carrying BLEU and
  ROUGE-1/2/L of the answer against the reference when both are given. The gateway does
  not keep answers itself: prompts and answers may hold personal data, and the caller has
  the answer anyway.
- **An evaluation set** run through the gateway's routing (``conveyor llm eval SET.jsonl
  --model fast``): JSON lines of ``{"messages": [...]}`` or ``{"prompt": "..."}`` with a
  ``reference``; every answer scored, the summary recorded as an ``llm.eval`` event.

``conveyor llm quality`` (``GET /v1/llm/quality``) reports per model over a period: calls,
feedback records, the mean human score and the mean BLEU/ROUGE of the records with
references (an evaluation set also gets its corpus BLEU).

BLEU is sacrebleu's (its standard tokenization; a sentence's is smoothed as sacrebleu's
``sentence_bleu``). ROUGE is computed here as Lin (2004) defines it, with the
tokenization of Google's ``rouge-score`` (lower case, runs of letters and digits), no
stemming: F1 of unigram and bigram overlap, and of the longest common subsequence; the
tests check it against ``rouge-score`` itself.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = [
    "Scores",
    "bleu",
    "quality_report",
    "record_llm_feedback",
    "rouge",
    "score_pair",
    "usage_report",
]

_TOKEN = re.compile(r"[a-z0-9]+")
_MAX_TEXT = 100_000


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _f1(overlap: int, candidate: int, reference: int) -> float:
    if overlap == 0 or candidate == 0 or reference == 0:
        return 0.0
    precision, recall = overlap / candidate, overlap / reference
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge(candidate: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 of ``candidate`` against ``reference`` (0 to 1)."""
    cand, ref = _tokens(candidate), _tokens(reference)
    scores = {}
    for n in (1, 2):
        c, r = _ngrams(cand, n), _ngrams(ref, n)
        scores[f"rouge{n}"] = _f1(sum((c & r).values()), sum(c.values()), sum(r.values()))
    scores["rougeL"] = _f1(_lcs(cand, ref), len(cand), len(ref))
    return scores


def bleu(candidates: Sequence[str], references: Sequence[str]) -> float:
    """BLEU (0 to 100, sacrebleu): of one sentence when given one pair (smoothed, as
    sacrebleu's ``sentence_bleu``), else of the corpus of pairs."""
    import sacrebleu

    if len(candidates) != len(references):
        raise InvalidInputError("bleu: as many references as candidates", field="references")
    if not candidates:
        return 0.0
    if len(candidates) == 1:
        return float(sacrebleu.sentence_bleu(candidates[0], [references[0]]).score)
    return float(sacrebleu.corpus_bleu(list(candidates), [list(references)]).score)


@dataclass(frozen=True, slots=True)
class Scores:
    """BLEU and ROUGE of one answer against its reference."""

    bleu: float
    rouge1: float
    rouge2: float
    rougeL: float

    def as_dict(self) -> dict[str, float]:
        return {
            "bleu": round(self.bleu, 4),
            "rouge1": round(self.rouge1, 4),
            "rouge2": round(self.rouge2, 4),
            "rougeL": round(self.rougeL, 4),
        }


def score_pair(answer: str, reference: str) -> Scores:
    """BLEU and ROUGE-1/2/L of an answer against its reference."""
    found = rouge(answer, reference)
    return Scores(bleu([answer], [reference]), found["rouge1"], found["rouge2"], found["rougeL"])


def _text(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"'{name}' is a string", field=name)
    if len(value) > _MAX_TEXT:
        raise InvalidInputError(f"'{name}' is at most {_MAX_TEXT:,} characters", field=name)
    return value


def check_feedback(record: Any) -> dict[str, Any]:
    """One feedback record, checked: the event's payload (scores computed)."""
    if not isinstance(record, dict):
        raise InvalidInputError("a feedback record is a JSON object", field="body")
    unknown = set(record) - {"request_id", "score", "reference", "answer", "comment"}
    if unknown:
        raise InvalidInputError(
            f"unknown field(s) {', '.join(sorted(unknown))}: a record has request_id, score, "
            "reference, answer, comment",
            field=sorted(unknown)[0],
        )
    request_id = record.get("request_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 200:
        raise InvalidInputError(
            "'request_id' is the x-request-id the gateway answered with", field="request_id"
        )
    score = record.get("score")
    if score is not None and (
        isinstance(score, bool)
        or not isinstance(score, int | float)
        or not math.isfinite(score)
        or not 0 <= score <= 1
    ):
        raise InvalidInputError(f"'score' is a number from 0 to 1, got {score!r}", field="score")
    reference, answer = _text(record, "reference"), _text(record, "answer")
    comment = _text(record, "comment")
    if score is None and reference is None:
        raise InvalidInputError("a record carries a 'score', a 'reference', or both", field="score")
    if (reference is None) != (answer is None):
        raise InvalidInputError(
            "'reference' and 'answer' come together (the answer is scored against it)",
            field="answer" if answer is None else "reference",
        )
    scores = score_pair(answer, reference).as_dict() if answer and reference else None
    return {
        "score": None if score is None else float(score),
        "scores": scores,
        "comment": comment,
        "_request_id": request_id,
    }


def record_llm_feedback(
    project: Project, records: Iterable[Any], *, actor: str | None = None
) -> list[dict[str, Any]]:
    """Check every record, then write one ``llm.feedback`` event each (nothing is written
    when one is malformed: the error names it)."""
    from conveyor.gateway.events import LLM_FEEDBACK

    checked = []
    for i, record in enumerate(records):
        try:
            checked.append(check_feedback(record))
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"record {i}: {exc.message}", field=str(exc.context.get("field"))
            ) from None
    done = []
    for payload in checked:
        request_id = payload.pop("_request_id")
        call = next(iter(project.events.iter(kind="llm.call", request_id=request_id)), None)
        payload["model"] = call.subject if call is not None else None
        project.events.record(
            LLM_FEEDBACK,
            subject=payload["model"],
            payload=payload,
            request_id=request_id,
            actor=actor,
        )
        done.append({**payload, "request_id": request_id})
    return done


def quality_report(
    project: Project,
    *,
    since: datetime,
    until: datetime | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Per model asked: calls and feedback records in the period (each by its own time),
    the mean human score, and the mean BLEU and ROUGE of the records with a reference."""
    calls: Counter[str] = Counter()
    for event in project.events.iter(kind="llm.call", since=since, until=until, subject=model):
        calls[event.subject or "?"] += 1
    feedback: Counter[str] = Counter()
    human: dict[str, list[float]] = {}
    pairs: dict[str, list[dict[str, float]]] = {}
    for event in project.events.iter(kind="llm.feedback", since=since, until=until, subject=model):
        name = event.subject or "?"
        feedback[name] += 1
        payload = event.payload
        if payload.get("score") is not None:
            human.setdefault(name, []).append(float(payload["score"]))
        if payload.get("scores"):
            pairs.setdefault(name, []).append(payload["scores"])
    report = []
    for name in sorted(set(calls) | set(feedback)):
        scores, scored = human.get(name, []), pairs.get(name, [])
        entry: dict[str, Any] = {
            "model": name,
            "calls": calls[name],
            "feedback": feedback[name],
            "mean_score": _mean(scores),
            "scored": len(scores),
            "with_reference": len(scored),
        }
        for metric in ("bleu", "rouge1", "rouge2", "rougeL"):
            entry[metric] = _mean([p[metric] for p in scored])
        report.append(entry)
    return report


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def read_eval_set(path: str) -> list[dict[str, Any]]:
    """An evaluation set: JSON lines of ``{"messages": [...]}`` or ``{"prompt": "..."}``,
    each with a ``reference`` (an ``id`` is optional). A bad line is an error naming it."""
    from pathlib import Path

    import orjson

    from conveyor.errors import NotFoundError

    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        raise NotFoundError(f"no evaluation set at {path}", path=path) from None
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"{path}:{number}: not JSON ({exc})", field="line") from None
        if not isinstance(item, dict) or not isinstance(item.get("reference"), str):
            raise InvalidInputError(f"{path}:{number}: an object with a 'reference'", field="line")
        messages = item.get("messages")
        if messages is None and isinstance(item.get("prompt"), str):
            messages = [{"role": "user", "content": item["prompt"]}]
        if not isinstance(messages, list) or not messages:
            raise InvalidInputError(
                f"{path}:{number}: 'messages' (a list) or 'prompt' (a string)", field="line"
            )
        examples.append(
            {
                "id": str(item.get("id", number)),
                "messages": messages,
                "reference": item["reference"],
            }
        )
    if not examples:
        raise InvalidInputError(f"{path}: no examples", field="path")
    return examples


async def run_eval(
    spec: Any,
    model: str,
    examples: Sequence[dict[str, Any]],
    *,
    max_tokens: int = 256,
    concurrency: int = 4,
) -> dict[str, Any]:
    """Every example through the gateway's routing (in this process), each answer scored
    against its reference; the summary (corpus BLEU, mean ROUGE, failures) and the rows."""
    import asyncio

    from conveyor.gateway.router import CallRecord, Router
    from conveyor.gateway.types import UpstreamError

    router = Router(spec)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(example: dict[str, Any]) -> dict[str, Any]:
        record = CallRecord(model)
        body = {"model": model, "messages": example["messages"], "max_tokens": max_tokens}
        async with gate:
            try:
                done = await router.chat(body, record)
            except UpstreamError as exc:
                return {"id": example["id"], "error": f"{exc.kind}: {exc.message}"}
        choices = done.get("choices") or [{}]
        answer = str((choices[0].get("message") or {}).get("content") or "")
        return {
            "id": example["id"],
            "deployment": record.deployment,
            "answer": answer,
            **score_pair(answer, example["reference"]).as_dict(),
        }

    try:
        rows = await asyncio.gather(*(one(e) for e in examples))
    finally:
        await router.aclose()
    answered = [r for r in rows if "error" not in r]
    summary: dict[str, Any] = {
        "model": model,
        "examples": len(rows),
        "answered": len(answered),
        "failed": len(rows) - len(answered),
        "bleu": round(
            bleu(
                [r["answer"] for r in answered],
                [e["reference"] for e, r in zip(examples, rows, strict=True) if "error" not in r],
            ),
            4,
        )
        if answered
        else None,
    }
    for metric in ("rouge1", "rouge2", "rougeL"):
        summary[metric] = _mean([r[metric] for r in answered])
    return {"summary": summary, "rows": rows}


_GROUPS = ("model", "deployment", "key", "user", "team", "conversation")


def usage_report(
    project: Project,
    *,
    since: datetime,
    until: datetime | None = None,
    by: str = "model",
) -> list[dict[str, Any]]:
    """Calls, tokens and cost of the gateway's calls in a period, grouped by ``by`` (one of
    model, deployment, key, user, team, conversation), from the ``llm.call`` events."""
    if by not in _GROUPS:
        raise InvalidInputError(f"by {by!r}: one of {', '.join(_GROUPS)}", field="by")
    rows: dict[str, dict[str, Any]] = {}
    for event in project.events.iter(kind="llm.call", since=since, until=until):
        payload = event.payload
        name = str(payload.get(by) or "-")
        row = rows.setdefault(
            name,
            {
                by: name,
                "calls": 0,
                "errors": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cached_tokens": 0,
                "cost_usd": 0.0,
            },
        )
        row["calls"] += 1
        row["errors"] += payload.get("status") == "error"
        for field in ("prompt_tokens", "completion_tokens", "cached_tokens"):
            row[field] += int(payload.get(field) or 0)
        row["cost_usd"] += float(payload.get("cost_usd") or 0.0)
    for row in rows.values():
        row["cost_usd"] = round(row["cost_usd"], 6)
    return sorted(rows.values(), key=lambda r: (-r["cost_usd"], -r["calls"]))
