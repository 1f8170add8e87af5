"""A policy's output checks on a stream, so a violation stops it before any of it is sent.

Each choice's text goes through a scanner that releases it as soon as no check can still
object to it. On every chunk the scanner runs each check on the text not yet released
plus the last ``window_chars`` released (so a match across chunks is seen whole), and
holds back:

- what a detector says could still begin a match (its ``pending(text)``: the sentence
  under way for ``groundedness``, the whole answer for ``json_schema``); for a detector of
  whole words or phrases (one with a ``words`` list: profanity), the tail that begins one
  of them; for the built-in ``pii`` and ``secrets``, the value under way (the last token,
  and for ``pii`` the groups of a number before it); a detector that cannot tell holds
  ``window_chars`` (64) characters;
- a match not yet *settled*: one ending in the last :data:`SETTLE` (2) characters (the
  next ones may still change it: a longer number, a word going on), or, for a detector
  that tells what is under way, one the value under way still reaches (``+33 1 42 68 53``
  may go on with `` 00``); it is judged once it is settled;
- a pseudonym of the prompt not yet whole (``<CREDIT_CARD_``), put back once it is
  (:class:`conveyor.guardrails.pii.StreamRestorer`).

**The bound.** For a match no longer than what is held, none of it is ever sent, and a
``block`` stops the stream at the chunk that settles it: the chunk bringing the 2
characters after the match for a detector that cannot tell (at most 2 chunks after the
match's last character: every chunk brings one at least), the one ending the value under
way for one that can (the next word: a card followed by a word stops the stream at the
chunk after its last digits; never more than ``window_chars`` characters after the match).
The scanner answers with what to send now and whether the stream stops (``block``: the
answer withheld; ``flag``: held for review). ``redact`` replaces a match by
``[REDACTED:LABEL]`` in what is held; ``log`` checks run once, on the whole answer, at its
end, and hold nothing.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from conveyor.guardrails.pii import StreamRestorer, Vault
from conveyor.guardrails.policy import Check, Observe, decision, redacted
from conveyor.guardrails.types import Detector, Finding

__all__ = ["SETTLE", "Step", "StreamGuard"]

#: Characters that must follow a match before it is judged (lookaheads such as "not
#: followed by a space and a digit" need two).
SETTLE = 2

Stop = Literal["block", "flag"]
_SPACES = re.compile(r"\s+")
_WORD_START = re.compile(r"(?<![^\W_])[^\W_]")  # a letter or digit after none


@dataclass(frozen=True, slots=True)
class Step:
    """What to do with one chunk of one choice."""

    text: str
    """What to send now (pseudonyms put back)."""
    stop: Stop | None = None
    """``block``: end the stream, the answer withheld; ``flag``: end it, held for review."""
    decision: dict[str, Any] | None = None
    """The decision that stopped it."""


@dataclass(slots=True)
class _Choice:
    pending: str = ""
    """Received, checked so far, not yet sent (redactions applied)."""
    tail: str = ""
    """The last ``window`` characters sent (before pseudonyms were put back)."""
    sent: int = 0
    parts: list[str] = field(default_factory=list)
    """Everything sent, as checked (for the checks of the whole answer)."""
    seen: set[tuple[str, str, int, int]] = field(default_factory=set)
    restorer: StreamRestorer | None = None


class StreamGuard:
    """The output checks of one policy over the choices of one stream (see the module)."""

    def __init__(
        self,
        checks: list[tuple[Check, Detector]],
        vault: Vault | None = None,
        window: int = 64,
        observe: Observe | None = None,
    ) -> None:
        self.vault = vault
        self.window = window
        self.observe = observe
        self.decisions: list[dict[str, Any]] = []
        # checks that act on the text as it comes; those judging the whole answer at its
        # end (a JSON schema, and every log check)
        self._rolling: list[tuple[Check, Detector]] = []
        self._whole: list[tuple[Check, Detector]] = []
        for check, detector in checks:
            whole = check.action == "log" or getattr(detector, "whole", False)
            (self._whole if whole else self._rolling).append((check, detector))
        self._hold_all = any(c.action != "log" for c, _ in self._whole)
        self._choices: dict[int, _Choice] = {}

    def _scan(self, check: Check, detector: Detector, text: str) -> list[Finding]:
        started = time.perf_counter()
        found = check.findings(detector, text)
        if self.observe is not None:
            self.observe(check.name, time.perf_counter() - started)
        return found

    def _hold(self, detector: Detector, text: str) -> tuple[int, bool]:
        """How many of the text's last characters could still begin (or go on with) a
        match, and whether the detector knows it (else: the window)."""
        pending = getattr(detector, "pending", None)
        if pending is not None:
            return int(pending(text)), True
        words = getattr(detector, "words", None)
        if words:
            return _word_tail(tuple(words), text), True
        if detector.name in _VALUES:
            return min(_value_tail(text, joined=detector.name == "pii"), self.window), True
        return self.window, False

    def feed(self, index: int, text: str, *, final: bool = False) -> Step:
        """Add ``text`` to choice ``index`` (``final``: its last chunk); what to send."""
        choice = self._choices.setdefault(index, _Choice())
        choice.pending += text
        hold = 0
        for check, detector in self._rolling:
            offset = len(choice.tail)
            context = choice.tail + choice.pending
            if final:
                settled_until, held = len(context), (0, False)
            else:  # a match may still grow while a value is under way at the end
                held = self._hold(detector, context)
                settled_until = len(context) - max(SETTLE, held[0] if held[1] else 0)
            redact: list[Finding] = []
            for finding in self._scan(check, detector, context):
                if finding.end <= offset:
                    continue  # sent already, judged when it was held
                if finding.end > settled_until:
                    hold = max(hold, len(context) - finding.start)
                    continue
                at = choice.sent + finding.start - offset
                key = (check.name, finding.label, at, finding.end - finding.start)
                if key in choice.seen:
                    continue
                choice.seen.add(key)
                made = decision(check, finding, "output", context)
                self.decisions.append(made)
                if check.action == "block":
                    choice.pending = ""  # withheld
                    return Step("", "block", made)
                if check.action == "flag":
                    return Step("", "flag", made)  # held, for the review to see
                redact.append(
                    Finding(
                        finding.detector,
                        finding.label,
                        max(finding.start - offset, 0),
                        finding.end - offset,
                        finding.score,
                    )
                )
            if redact:
                choice.pending = redacted(choice.pending, redact, None)
                if not final:
                    held = self._hold(detector, choice.tail + choice.pending)
            hold = max(hold, held[0])
        if final:
            stopped = self._judge_whole(choice)
            if stopped is not None:
                return stopped
            out = choice.pending
        elif self._hold_all:
            out = ""
        else:
            out = choice.pending[: max(0, len(choice.pending) - hold)]
        choice.pending = choice.pending[len(out) :]
        choice.sent += len(out)
        choice.tail = (choice.tail + out)[-self.window :]
        choice.parts.append(out)
        if self.vault:  # pseudonyms put back, one cut across chunks once it is whole
            if choice.restorer is None:
                choice.restorer = StreamRestorer(self.vault)
            out = choice.restorer.feed(out) + (choice.restorer.flush() if final else "")
        return Step(out)

    def _judge_whole(self, choice: _Choice) -> Step | None:
        """The checks of the whole answer, at its end (the held text redacted, or the
        stream stopped)."""
        if not self._whole:
            return None
        sent = "".join(choice.parts)
        for check, detector in self._whole:
            whole = sent + choice.pending
            found = self._scan(check, detector, whole)
            made = [decision(check, f, "output", whole) for f in found]
            self.decisions.extend(made)
            if not found or check.action == "log":
                continue
            if check.action == "block":
                choice.pending = ""
                return Step("", "block", made[0])
            if check.action == "flag":
                return Step("", "flag", made[0])
            held = [
                Finding(f.detector, f.label, f.start - len(sent), f.end - len(sent), f.score)
                for f in found
                if f.start >= len(sent)
            ]
            choice.pending = redacted(choice.pending, held, None)
        return None

    def text(self, index: int) -> str:
        """Choice ``index``'s answer so far as checked (sent and held; pseudonyms not put
        back): what a review keeps."""
        choice = self._choices.get(index)
        return "" if choice is None else "".join(choice.parts) + choice.pending

    def held(self) -> list[int]:
        """The choices with text still held back."""
        return [index for index, choice in self._choices.items() if choice.pending]


@lru_cache(maxsize=64)
def _prefixes(words: tuple[str, ...]) -> tuple[frozenset[str], int]:
    """Every beginning of every word or phrase (lower case, single spaces), and the
    longest one's length."""
    found: set[str] = set()
    for word in words:
        word = " ".join(word.lower().split())
        found.update(word[:n] for n in range(1, len(word) + 1))
    return frozenset(found), max((len(w) for w in found), default=0)


def _word_tail(words: tuple[str, ...], text: str) -> int:
    """The longest tail of ``text`` that starts a word and begins one of ``words``: what
    a whole-word list detector may still match."""
    prefixes, longest = _prefixes(words)
    base = max(0, len(text) - longest)
    for found in _WORD_START.finditer(text, base):  # the farthest first: the longest tail
        start = found.start()
        if start == base and start and text[start - 1].isalnum():
            continue  # inside a word that began before the tail
        if _SPACES.sub(" ", text[start:].lower()) in prefixes:
            return len(text) - start
    return 0


#: The built-in detectors of values (``conveyor.guardrails.detectors``): each match is one
#: token (an email, an API key, a JWT, a value after ``password=``), or for ``pii`` number
#: groups joined by single spaces (a card, an IBAN, a phone, a NINO, a NIR).
_VALUES = frozenset({"pii", "secrets"})
_PART = re.compile(r"[+(]?\S*\d\S*|[A-Z0-9]{1,4}")  # a group of a number: a digit, or capitals


def _value_tail(text: str, *, joined: bool) -> int:
    """What a value may still be under way in: the last token, unless whitespace ended it;
    with ``joined``, the groups of a number before it (single spaces apart) too; without,
    a PEM header line not yet whole (``-----BEGIN RSA PRIV``)."""
    end = len(text)
    if not end:
        return 0
    if not joined:
        dashes = text.rfind("-----", max(0, end - 64))
        if dashes >= 0 and "\n" not in text[dashes:] and not text.endswith("-----", dashes + 5):
            return end - dashes  # covers the last token too
    if text[-1].isspace():
        if not joined or end < 2 or text[-2].isspace() or text[-1] != " ":
            return 0  # a token ended: only a number's group may go on, after one space
        start = end - 1
    else:
        start = end
    token = start
    while token and not text[token - 1].isspace():
        token -= 1
    if start == end:  # the token under way: held, whatever it is
        held = token
        if not joined or not _PART.fullmatch(text[token:end]):
            return end - held
    elif _PART.fullmatch(text[token:start]):
        held = token
    else:
        return 0
    while held >= 2 and text[held - 1] == " " and not text[held - 2].isspace():
        before = held - 1
        while before and not text[before - 1].isspace():
            before -= 1
        if not _PART.fullmatch(text[before : held - 1]):
            break
        held = before
    return end - held
