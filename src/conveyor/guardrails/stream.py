"""Output checks on a stream: a rolling window, so a violation is caught before it is sent.

Each choice's text is held back by ``window`` characters (64 by default): a chunk's text is
scanned together with the window already sent and what is held back, and only what lies
more than ``window`` characters behind the newest text is released. So a match of at most
``window`` characters (a card number, an API key, a banned word) is seen whole before any
of it leaves, however the upstream cut it into chunks:

- ``block``: the stream stops at the chunk that completed the match: nothing more is sent
  but a last chunk with ``finish_reason: "content_filter"``; none of the match was sent;
- ``redact``: the match is replaced by ``[REDACTED:LABEL]`` in what is held back;
- ``flag`` / ``log``: recorded once.

The cost is latency, not throughput: text reaches the client ``window`` characters (about
16 tokens) later than the upstream sent it, and all of it at the end of the stream.
Pseudonyms of the prompt (``<CREDIT_CARD_1>``) are put back as the text is released, never
cut in half.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor.guardrails.policy import Policy, Vault

__all__ = ["StreamGuard"]

_LONGEST_PLACEHOLDER = 40


@dataclass(slots=True)
class _Choice:
    pending: str = ""
    tail: str = ""
    sent: int = 0
    seen: set[tuple[str, int, int]] = field(default_factory=set)


class StreamGuard:
    """A policy's output checks over the choices of one stream (see the module)."""

    def __init__(self, policy: Policy, vault: Vault | None, window: int = 64) -> None:
        self.policy = policy
        self.vault = vault
        self.window = window
        self.decisions: list[dict[str, Any]] = []
        self._choices: dict[int, _Choice] = {}

    def feed(self, index: int, text: str, *, final: bool = False) -> tuple[str, bool]:
        """The text of choice ``index`` to send now, and whether the stream must stop."""
        choice = self._choices.setdefault(index, _Choice())
        choice.pending += text
        offset = len(choice.tail)
        base = choice.sent - offset
        for check in self.policy.output:
            context = choice.tail + choice.pending
            redact = []
            for finding in check.detector.scan(context):
                if finding.end <= offset:
                    continue  # sent already, judged when it was held back
                key = (check.name, base + finding.start, base + finding.end)
                if key in choice.seen:
                    continue
                choice.seen.add(key)
                self.decisions.append(
                    {
                        "check": check.name,
                        "detector": finding.detector,
                        "label": finding.label,
                        "action": check.action,
                        "where": "output",
                        "score": finding.score,
                        "span": finding.redacted(context),
                    }
                )
                if check.action == "block":
                    choice.pending = ""
                    return "", True
                if check.action == "redact":
                    redact.append(finding)
            for finding in sorted(redact, key=lambda f: f.start, reverse=True):
                start = max(finding.start - offset, 0)
                end = finding.end - offset
                pending = choice.pending
                choice.pending = pending[:start] + f"[REDACTED:{finding.label}]" + pending[end:]
        cut = len(choice.pending) if final else max(0, len(choice.pending) - self.window)
        out = choice.pending[:cut]
        opened = out.rfind("<")
        if not final and opened > out.rfind(">") and len(out) - opened < _LONGEST_PLACEHOLDER:
            out = out[:opened]  # a pseudonym not yet whole: hold it back too
        choice.pending = choice.pending[len(out) :]
        choice.sent += len(out)
        choice.tail = (choice.tail + out)[-self.window :]
        if self.vault:
            out = self.vault.restore(out)
        return out, False

    def held(self) -> list[int]:
        """The choices with text still held back."""
        return [index for index, choice in self._choices.items() if choice.pending]
