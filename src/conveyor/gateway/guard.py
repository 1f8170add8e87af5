"""The guardrails stage: a policy's input checks before the call, its output checks on
the answer (streamed or not), pseudonyms of the prompt put back in the answer, and flagged
calls held for review (:mod:`conveyor.guardrails.policy`, ``.stream``, ``.review``).

- **Input**: the text of every ``user`` and ``tool`` message (a tool's output is where
  indirect injections come from; the application's own ``system`` prompt is not checked).
  A ``block`` answers **400** in OpenAI's shape, code ``guardrail_blocked``, ``param``
  naming the message, the message naming the check and what it found (masked), as
  OpenAI answers a prompt its content filter refuses; no upstream call is made.
  ``redact`` sends pseudonyms upstream.
- **Output**: each choice's content, before the pseudonyms are put back (the user's own
  card number, restored, is not a leak; a number the model made up is). A ``block``
  empties the content and sets ``finish_reason: "content_filter"``, as OpenAI does. In a
  stream (:mod:`conveyor.guardrails.stream`) the stream stops there: a last chunk with
  ``finish_reason: "content_filter"`` and then an error event in OpenAI's shape (code
  ``guardrail_blocked``; the openai client raises ``APIError``) instead of ``[DONE]``.
- **Flag**: the call is queued for review and the caller gets the pending-review answer
  (:mod:`conveyor.guardrails.review`); a prompt flagged and streamed is answered, once the
  upstream is done, by one chunk per choice saying so.
- Every decision is a ``guardrail.decision`` event and goes into the ``llm.call`` event's
  ``guardrails`` list; each check's time is ``conveyor_guardrail_seconds{check}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError
from conveyor.gateway.types import Chunk
from conveyor.guardrails.pii import Vault
from conveyor.guardrails.policy import GuardrailsSpec, Policy
from conveyor.guardrails.review import Reviews, new_id, pending_message
from conveyor.guardrails.stream import StreamGuard

if TYPE_CHECKING:
    from conveyor.gateway.turn import Outcome, Proceed, Turn
    from conveyor.guardrails.policy import Check, Run
    from conveyor.guardrails.types import Detector
    from conveyor.web.app import AppContext

__all__ = ["GuardStage", "GuardrailBlockedError"]

log = logging.getLogger("conveyor.gateway")


class GuardrailBlockedError(InvalidInputError):
    """A guardrail blocked the request (HTTP 400, OpenAI-shaped) or stopped its stream."""

    code = "guardrail_blocked"


_CHECKED_ROLES = ("user", "tool")


def _blocked(decision: dict[str, Any], where: str) -> GuardrailBlockedError:
    return GuardrailBlockedError(
        f"the {'request' if where.startswith('messages') else 'answer'} was blocked by the "
        f"guardrail {decision['check']} ({decision['label']} found in {where}: "
        f"{decision['span']!r})",
        field=where,
        check=decision["check"],
        label=decision["label"],
    )


class GuardStage:
    """Runs the call's policy around it (see the module)."""

    name = "guardrails"

    def __init__(self, spec: GuardrailsSpec, context: AppContext | None = None) -> None:
        self.spec = spec
        self.policies = {name: Policy(name, checks) for name, checks in spec.policies.items()}
        self._seconds: Any = None
        self._project = None if context is None else context.project
        self._deps = None if context is None else context.dependencies
        self._reviews = (
            None if self._project is None else Reviews(self._project.store, self._project.events)
        )
        if context is not None:
            from prometheus_client import Histogram

            self._seconds = Histogram(
                "conveyor_guardrail_seconds",
                "Time a guardrail check took on one text (a prompt's message, an answer's "
                "choice, a stream's chunk), by check.",
                ("check",),
                buckets=(0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1),
                registry=context.metrics.registry,
            )

    def _observe(self, check: str, seconds: float) -> None:
        if self._seconds is not None:
            self._seconds.labels(check).observe(seconds)

    def policy_for(self, turn: Turn) -> Policy | None:
        name = self.spec.policy_name(
            key=turn.key, team=turn.team, model=turn.record.model, deployment=None
        )
        return None if name is None else self.policies[name]

    async def __call__(self, turn: Turn, proceed: Proceed) -> Outcome:
        policy = self.policy_for(turn)
        if policy is None:
            return await proceed(turn)
        decisions: list[dict[str, Any]] = []
        turn.event["guardrails"] = decisions
        vault = Vault()
        output = policy.bound(turn.body)  # a bad JSON schema: 400 before the call
        try:
            body, flagged = self._checked_input(turn.body, policy, vault, decisions)
        except GuardrailBlockedError:
            self._record(turn, policy, decisions)
            raise
        turn.body = body
        try:
            outcome = await proceed(turn)
        except BaseException:
            self._record(turn, policy, decisions)
            raise
        if isinstance(outcome, dict):
            return await self._answer(turn, policy, outcome, output, vault, flagged, decisions)
        if hasattr(outcome, "__anext__"):
            guard = StreamGuard(output, vault, self.spec.window_chars, self._observe)
            return self._stream(turn, policy, outcome, guard, flagged, decisions)
        self._record(turn, policy, decisions)
        return outcome

    # -- input --------------------------------------------------------------------------

    def _checked_input(
        self, body: dict[str, Any], policy: Policy, vault: Vault, decisions: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], bool]:
        """The body with its messages checked (redacted), and whether one was flagged."""
        if not policy.input:
            return body, False
        flagged = False
        messages = []
        for i, message in enumerate(body["messages"]):
            content = message.get("content")
            if message.get("role") not in _CHECKED_ROLES or not content:
                messages.append(message)
                continue
            if isinstance(content, str):
                run = self._run_input(content, policy, vault, decisions, i)
                flagged |= run.flagged
                content = run.text
            elif isinstance(content, list):  # parts: the text ones
                parts = []
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        run = self._run_input(part["text"], policy, vault, decisions, i)
                        flagged |= run.flagged
                        part = {**part, "text": run.text}
                    parts.append(part)
                content = parts
            messages.append({**message, "content": content})
        return {**body, "messages": messages}, flagged

    def _run_input(
        self,
        text: str,
        policy: Policy,
        vault: Vault,
        decisions: list[dict[str, Any]],
        index: int,
    ) -> Run:
        run = policy.run(text, "input", vault, observe=self._observe)
        decisions.extend(run.decisions)
        if run.blocked is not None:
            raise _blocked(run.blocked, f"messages[{index}]")
        return run

    # -- a whole answer -----------------------------------------------------------------

    async def _answer(
        self,
        turn: Turn,
        policy: Policy,
        answer: dict[str, Any],
        output: list[tuple[Check, Detector]],
        vault: Vault,
        flagged: bool,
        decisions: list[dict[str, Any]],
    ) -> dict[str, Any]:
        texts: list[str | None] = []
        for choice in answer.get("choices") or ():
            message = choice.get("message") or {}
            content = message.get("content")
            if not isinstance(content, str) or not content:
                texts.append(content if isinstance(content, str) else None)
                continue
            run = policy.run(content, "output", checks=output, observe=self._observe)
            decisions.extend(run.decisions)
            if run.blocked is not None:
                message["content"] = ""
                choice["finish_reason"] = "content_filter"
                texts.append(None)
                continue
            flagged |= run.flagged
            texts.append(run.text)
            message["content"] = vault.restore(run.text)
        if flagged:
            review = await self._queue(turn, policy, texts, decisions)
            self._record(turn, policy, decisions)
            return _pending(answer, review)
        self._record(turn, policy, decisions)
        return answer

    # -- a stream -----------------------------------------------------------------------

    async def _stream(
        self,
        turn: Turn,
        policy: Policy,
        chunks: AsyncIterator[Chunk],
        guard: StreamGuard,
        flagged: bool,
        decisions: list[dict[str, Any]],
    ) -> AsyncIterator[Chunk]:
        held_back = flagged  # a flagged prompt: nothing is sent until the upstream is done
        indexes: set[int] = set()
        last: dict[str, Any] = {}
        usage: list[Chunk] = []
        try:
            async for chunk in chunks:
                choices = chunk.data.get("choices")
                if not choices:
                    if held_back:
                        usage.append(chunk)
                    else:
                        yield chunk  # the usage chunk
                    continue
                last = chunk.data
                for choice in choices:
                    index = int(choice.get("index") or 0)
                    indexes.add(index)
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    final = bool(choice.get("finish_reason"))
                    if not isinstance(content, str) and not final:
                        continue
                    step = guard.feed(index, content or "", final=final)
                    if step.stop == "block":
                        yield _finish(chunk.data, index, "content_filter")
                        assert step.decision is not None
                        raise _blocked(step.decision, f"choices[{index}]")
                    if step.stop == "flag" and not held_back:
                        review = await self._queue_stream(turn, policy, guard, indexes, decisions)
                        tail = "\n\n" + pending_message(review)
                        yield _finish(chunk.data, index, "content_filter", tail, review)
                        return
                    if isinstance(content, str) or step.text:
                        choice["delta"] = {**delta, "content": step.text}
                if not held_back:
                    yield Chunk(chunk.data)
            for index in guard.held():  # the upstream ended without a finish chunk
                step = guard.feed(index, "", final=True)
                if step.stop == "block":
                    yield _finish(last, index, "content_filter")
                    assert step.decision is not None
                    raise _blocked(step.decision, f"choices[{index}]")
                if step.stop == "flag" and not held_back:
                    review = await self._queue_stream(turn, policy, guard, indexes, decisions)
                    tail = "\n\n" + pending_message(review)
                    yield _finish(last, index, "content_filter", tail, review)
                    return
                if step.text and not held_back:
                    yield _delta(last, index, step.text)
            if held_back:
                review = await self._queue_stream(turn, policy, guard, indexes, decisions)
                for index in sorted(indexes) or [0]:
                    yield _finish(last, index, "content_filter", pending_message(review), review)
                for chunk in usage:
                    yield chunk
        finally:
            decisions.extend(guard.decisions)
            guard.decisions.clear()
            self._record(turn, policy, decisions)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- the review queue ---------------------------------------------------------------

    async def _queue_stream(
        self,
        turn: Turn,
        policy: Policy,
        guard: StreamGuard,
        indexes: set[int],
        decisions: list[dict[str, Any]],
    ) -> str:
        decisions.extend(guard.decisions)
        guard.decisions.clear()
        texts: list[str | None] = [guard.text(i) for i in range(max(indexes, default=0) + 1)]
        return await self._queue(turn, policy, texts, decisions)

    async def _queue(
        self,
        turn: Turn,
        policy: Policy,
        texts: list[str | None],
        decisions: list[dict[str, Any]],
    ) -> str:
        """Queue the call for review (in the store, off the event loop); its id."""
        review_id = new_id()
        turn.event["review"] = review_id
        if self._reviews is None:
            return review_id
        record = {
            "model": turn.record.model,
            "policy": policy.name,
            "messages": turn.body["messages"],
            "answers": texts,
            "decisions": list(decisions),
            "request_id": turn.call.request_id,
            "deployment": turn.record.deployment,
            "key": turn.key,
            "user": turn.user,
            "team": turn.team,
            "stream": turn.stream,
            "review_id": review_id,
        }

        def add() -> str:
            assert self._reviews is not None
            return self._reviews.add(**record)

        if self._deps is not None:
            timeout = self._deps.limits.store_timeout_s
            return await self._deps.call("store", timeout, add)
        return await asyncio.to_thread(add)

    # -- events -------------------------------------------------------------------------

    def _record(self, turn: Turn, policy: Policy, decisions: list[dict[str, Any]]) -> None:
        """One ``guardrail.decision`` event per decision not recorded yet (never raises)."""
        if self._project is None:
            return
        done = turn.state.setdefault(self.name, {"recorded": 0})
        try:
            from conveyor.gateway.events import GUARDRAIL_DECISION

            for made in decisions[done["recorded"] :]:
                self._project.events.record(
                    GUARDRAIL_DECISION,
                    subject=turn.record.model,
                    payload={
                        **made,
                        "policy": policy.name,
                        "key": turn.key,
                        "model": turn.record.model,
                    },
                    request_id=turn.call.request_id,
                    actor=turn.call.actor,
                )
            done["recorded"] = len(decisions)
        except Exception:  # telemetry never fails a call
            log.exception("recording guardrail decisions failed")


def _pending(answer: dict[str, Any], review_id: str) -> dict[str, Any]:
    """The answer of a call held for review: every choice says so (see review)."""
    message = pending_message(review_id)
    choices = [
        {
            "index": choice.get("index", i),
            "message": {"role": "assistant", "content": message, "refusal": None},
            "finish_reason": "content_filter",
            "logprobs": None,
        }
        for i, choice in enumerate(answer.get("choices") or [{}])
    ]
    return {**answer, "choices": choices, "review": {"id": review_id, "status": "pending"}}


def _tail(review_id: str) -> str:
    return "\n\n" + pending_message(review_id)


def _finish(
    data: dict[str, Any],
    index: int,
    reason: str,
    content: str | None = None,
    review: str | None = None,
) -> Chunk:
    """A last chunk for choice ``index``: ``reason``, with ``content`` (and the review
    holding the call) if given."""
    delta = {} if content is None else {"content": content}
    head = {k: v for k, v in data.items() if k not in ("choices", "usage")}
    out = {
        **head,
        "object": "chat.completion.chunk",
        "choices": [{"index": index, "delta": delta, "finish_reason": reason}],
    }
    if review is not None:
        out["review"] = {"id": review, "status": "pending"}
    return Chunk(out)


def _delta(data: dict[str, Any], index: int, text: str) -> Chunk:
    head = {k: v for k, v in data.items() if k not in ("choices", "usage")}
    return Chunk(
        {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": {"content": text}, "finish_reason": None}],
        }
    )
