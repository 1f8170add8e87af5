"""The guardrails stage: a policy's input checks before the call, its output checks on
the answer (streamed or not), pseudonyms of the prompt put back in the answer.

- **Input**: the text of every ``user`` and ``tool`` message (a tool's output is where
  indirect injections come from; the application's own ``system`` prompt is not checked).
  A ``block`` answers 400 in OpenAI's shape, code ``guardrail_blocked``, naming the check
  and what it found (masked); no upstream call is made. ``redact`` sends pseudonyms
  upstream.
- **Output**: each choice's content, before the pseudonyms are put back (the user's own
  card number, restored, is not a leak; a number the model made up is). A ``block``
  empties the content and sets ``finish_reason: "content_filter"``, as OpenAI does; in a
  stream, the stream ends there (:mod:`conveyor.guardrails.stream`).
- Decisions go into the ``llm.call`` event (``guardrails``: check, label, action, where,
  score, the span masked); each policy's time is ``conveyor_guardrail_seconds{check}``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError
from conveyor.gateway.types import Chunk
from conveyor.guardrails.policy import GuardrailsSpec, Policy, Vault
from conveyor.guardrails.stream import StreamGuard

if TYPE_CHECKING:
    from conveyor.gateway.turn import Outcome, Proceed, Turn

__all__ = ["GuardStage", "GuardrailBlockedError"]


class GuardrailBlockedError(InvalidInputError):
    """A guardrail blocked the request (HTTP 400, OpenAI-shaped)."""

    code = "guardrail_blocked"


_CHECKED_ROLES = ("user", "tool")


class GuardStage:
    """Runs the model's policy around the call (see the module)."""

    name = "guardrails"

    def __init__(self, spec: GuardrailsSpec, registry: Any = None) -> None:
        self.spec = spec
        self.policies = {name: Policy(name, policy) for name, policy in spec.policies.items()}
        self._seconds: Any = None
        if registry is not None:
            from prometheus_client import Histogram

            self._seconds = Histogram(
                "conveyor_guardrail_seconds",
                "Time spent in a guardrail policy's checks, by policy and where (input, "
                "output: a whole answer; stream: all the chunks of one).",
                ("check",),
                buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
                registry=registry,
            )

    def _observe(self, label: str, started: float) -> None:
        if self._seconds is not None:
            self._seconds.labels(label).observe(time.perf_counter() - started)

    def policy_for(self, model: str) -> Policy | None:
        name = self.spec.models.get(model, self.spec.default)
        return None if name is None else self.policies[name]

    async def __call__(self, turn: Turn, proceed: Proceed) -> Outcome:
        policy = self.policy_for(turn.record.model)
        if policy is None:
            return await proceed(turn)
        decisions: list[dict[str, Any]] = []
        turn.event["guardrails"] = decisions
        vault = Vault()
        started = time.perf_counter()
        turn.body = self._checked_input(turn.body, policy, vault, decisions)
        self._observe(f"{policy.name}:input", started)
        outcome = await proceed(turn)
        if isinstance(outcome, dict):
            started = time.perf_counter()
            for choice in outcome.get("choices") or ():
                self._checked_choice(choice, policy, vault, decisions)
            self._observe(f"{policy.name}:output", started)
            return outcome
        if hasattr(outcome, "__anext__"):
            guard = StreamGuard(policy, vault, self.spec.window_chars)
            return self._stream(outcome, guard, decisions, policy.name)
        return outcome

    def _checked_input(
        self, body: dict[str, Any], policy: Policy, vault: Vault, decisions: list[dict[str, Any]]
    ) -> dict[str, Any]:
        messages = []
        for i, message in enumerate(body["messages"]):
            content = message.get("content")
            if message.get("role") not in _CHECKED_ROLES or not content:
                messages.append(message)
                continue
            if isinstance(content, str):
                content = self._run_input(content, policy, vault, decisions, i)
            elif isinstance(content, list):  # parts: the text ones
                content = [
                    {**part, "text": self._run_input(part["text"], policy, vault, decisions, i)}
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                    else part
                    for part in content
                ]
            messages.append({**message, "content": content})
        return {**body, "messages": messages}

    @staticmethod
    def _run_input(
        text: str, policy: Policy, vault: Vault, decisions: list[dict[str, Any]], index: int
    ) -> str:
        passed, found, blocked = policy.run(text, "input", vault)
        decisions.extend(found)
        if blocked is not None:
            raise GuardrailBlockedError(
                f"the request was blocked by the guardrail {blocked['check']} "
                f"({blocked['label']} found in messages[{index}]: {blocked['span']!r})",
                field=f"messages[{index}]",
                check=blocked["check"],
                label=blocked["label"],
            )
        return passed

    @staticmethod
    def _checked_choice(
        choice: dict[str, Any], policy: Policy, vault: Vault, decisions: list[dict[str, Any]]
    ) -> None:
        message = choice.get("message") or {}
        content = message.get("content")
        if not isinstance(content, str) or not content:
            return
        passed, found, blocked = policy.run(content, "output")
        decisions.extend(found)
        if blocked is not None:
            message["content"] = ""
            choice["finish_reason"] = "content_filter"
            return
        message["content"] = vault.restore(passed)

    async def _stream(
        self,
        chunks: AsyncIterator[Chunk],
        guard: StreamGuard,
        decisions: list[dict[str, Any]],
        name: str,
    ) -> AsyncIterator[Chunk]:
        spent = 0.0
        try:
            async for chunk in chunks:
                choices = chunk.data.get("choices")
                if not choices:
                    yield chunk
                    continue
                started = time.perf_counter()
                stopped = None
                for choice in choices:
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    final = bool(choice.get("finish_reason"))
                    if not isinstance(content, str) and not final:
                        continue
                    out, stop = guard.feed(
                        int(choice.get("index") or 0), content or "", final=final
                    )
                    if stop:
                        stopped = choice
                        break
                    if isinstance(content, str) or out:
                        choice["delta"] = {**delta, "content": out}
                spent += time.perf_counter() - started
                if stopped is not None:
                    decisions.extend(guard.decisions)
                    guard.decisions.clear()
                    stopped["delta"] = {}
                    stopped["finish_reason"] = "content_filter"
                    yield Chunk({**chunk.data, "choices": [stopped]})
                    return
                yield Chunk(chunk.data)
            for index in guard.held():  # the upstream ended without a finish chunk
                out, _ = guard.feed(index, "", final=True)
                if out:
                    yield Chunk(
                        {
                            "object": "chat.completion.chunk",
                            "choices": [
                                {"index": index, "delta": {"content": out}, "finish_reason": None}
                            ],
                        }
                    )
        finally:
            decisions.extend(guard.decisions)
            if self._seconds is not None:
                self._seconds.labels(f"{name}:stream").observe(spent)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
