"""Guardrail policies, the answer checks and the streaming scanner, on detectors of this
file (a Luhn-checked number, a word list) so the machinery is tested on its own: the
order of checks and their actions, pseudonyms, where a check applies, min_score, which
policy a call runs; groundedness and JSON schemas; a stream stopped within the stated
bound, redacted the same as the whole text for every chunking, holding back only what
could still begin a match."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from conveyor.errors import InvalidInputError
from conveyor.guardrails import policy as policy_module
from conveyor.guardrails.answers import Groundedness, JsonSchema, context_of
from conveyor.guardrails.pii import Vault
from conveyor.guardrails.policy import CheckSpec, GuardrailsSpec, Policy, register
from conveyor.guardrails.stream import SETTLE, StreamGuard
from conveyor.guardrails.types import Finding

CARD = "4111 1111 1111 1111"


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


class Numbers:
    """Card-like numbers (13 to 19 digits, spaces allowed, Luhn); knows which tail of a
    text could still begin one."""

    name = "numbers"
    _PATTERN = re.compile(r"(?<!\d)(?<!\d )\d(?: ?\d){12,18}(?! ?\d)")
    _TAIL = re.compile(r"\d(?: ?\d)* ?$")

    def __init__(self, score: float = 1.0) -> None:
        self.score = score

    def scan(self, text: str) -> list[Finding]:
        return [
            Finding(self.name, "NUMBER", m.start(), m.end(), self.score)
            for m in self._PATTERN.finditer(text)
            if _luhn(m.group().replace(" ", ""))
        ]

    def pending(self, text: str) -> int:
        found = self._TAIL.search(text)
        return 0 if found is None else len(text) - found.start()


class Words:
    """Whole words from a list; cannot tell where a match may begin (no ``pending``)."""

    def __init__(self, words: list[str], label: str = "WORD") -> None:
        self.name = "words"
        self.label = label
        self._pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b", re.I)

    def scan(self, text: str) -> list[Finding]:
        return [
            Finding(self.name, self.label, m.start(), m.end()) for m in self._pattern.finditer(text)
        ]


class Listed(Words):
    """Whole words from a list it shows (``words``): a stream holds only what begins one."""

    def __init__(self, words: list[str]) -> None:
        super().__init__(words, "LISTED")
        self.name = "listed"
        self.words = tuple(words)


def _words(settings: dict[str, Any]) -> Words:
    unknown = set(settings) - {"words", "label"}
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    return Words(settings.get("words") or ["darn"], settings.get("label", "WORD"))


def _numbers(settings: dict[str, Any]) -> Numbers:
    return Numbers(**settings)


@pytest.fixture(autouse=True)
def _detectors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_module, "_REGISTERED", {})
    register("numbers", _numbers)
    register("words", _words)
    register("listed", lambda settings: Listed(settings["words"]))


def _policy(*checks: dict[str, Any]) -> Policy:
    return Policy("p", [CheckSpec.model_validate(c) for c in checks])


# -- the spec -------------------------------------------------------------------------------


def test_a_policy_is_a_list_of_checks_or_its_input_and_output() -> None:
    spec = GuardrailsSpec.model_validate(
        {
            "policies": {
                "listed": [
                    {"detector": "numbers", "action": "redact"},
                    {"detector": "words", "where": "output", "action": "block", "words": ["x"]},
                    {"detector": "json_schema", "action": "flag"},
                ],
                "split": {
                    "input": [{"detector": "numbers", "action": "block"}],
                    "output": [{"detector": "words", "action": "log"}],
                },
            },
            "default": "listed",
        }
    )
    listed = {c.check_name: c.sides for c in spec.policies["listed"]}
    assert listed == {
        "numbers": ("input", "output"),  # both, by default
        "words": ("output",),
        "json_schema": ("output",),  # an answer check: output
    }
    assert [(c.detector, c.sides) for c in spec.policies["split"]] == [
        ("numbers", ("input",)),
        ("words", ("output",)),
    ]
    assert spec.policies["listed"][1].settings == {"words": ["x"]}


@pytest.mark.parametrize(
    ("policies", "extra", "message"),
    [
        ([{"detector": "nope", "action": "block"}], {}, "no detector 'nope'"),
        ([{"detector": "words", "action": "block", "colour": 1}], {}, "unknown settings"),
        ([{"detector": "groundedness", "where": "input", "action": "flag"}], {}, "where is output"),
        ([{"detector": "json_schema", "action": "redact"}], {}, "json_schema cannot redact"),
        (
            [{"detector": "words", "action": "log"}, {"detector": "words", "action": "block"}],
            {},
            "two checks named 'words'",
        ),
        ([{"detector": "words", "action": "log"}], {"keys": {"app": "gone"}}, "no policy 'gone'"),
        ([{"detector": "words", "action": "log"}], {"default": "gone"}, "no policy 'gone'"),
        ([{"detector": "words", "action": "warn"}], {}, "action"),
        ([{"detector": "groundedness", "action": "flag", "threshold": 2}], {}, "threshold"),
    ],
)
def test_a_bad_policy_is_refused_naming_what(
    policies: list[dict[str, Any]], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        GuardrailsSpec.model_validate({"policies": {"p": policies}, **extra})


def test_a_call_runs_its_keys_then_its_teams_then_its_models_then_the_default() -> None:
    check = [{"detector": "words", "action": "log"}]
    spec = GuardrailsSpec.model_validate(
        {
            "policies": {n: check for n in ("k", "t", "m", "d")},
            "keys": {"app": "k"},
            "teams": {"risk": "t"},
            "models": {"fast": "m"},
            "default": "d",
        }
    )
    assert spec.policy_name(key="app", team="risk", model="fast") == "k"
    assert spec.policy_name(key="other", team="risk", model="fast") == "t"
    assert spec.policy_name(key=None, team=None, model="fast") == "m"
    assert spec.policy_name(key=None, team=None, model="smart") == "d"
    assert (
        spec.model_copy(update={"default": None}).policy_name(key=None, team=None, model="smart")
        is None
    )


# -- running a policy -----------------------------------------------------------------------


def test_checks_run_in_order_on_the_text_the_previous_ones_left() -> None:
    policy = _policy(
        {"detector": "numbers", "action": "redact"},
        {"detector": "words", "action": "flag", "words": ["refund"]},
        {"detector": "words", "name": "swear", "action": "block", "words": ["darn"]},
    )
    vault = Vault()
    text = f"refund {CARD} and again {CARD}, then 4111 1111 1111 1112"
    run = policy.run(text, "input", vault)
    # the same number, the same pseudonym; a number failing Luhn is no finding
    assert run.text == "refund <NUMBER_1> and again <NUMBER_1>, then 4111 1111 1111 1112"
    assert run.flagged and run.blocked is None
    assert [(d["check"], d["action"]) for d in run.decisions] == [
        ("numbers", "redact"),
        ("numbers", "redact"),
        ("words", "flag"),
    ]
    assert all(CARD not in d["span"] for d in run.decisions)
    assert vault.restore("yours is <NUMBER_1>; <NUMBER_2> is not known") == (
        f"yours is {CARD}; <NUMBER_2> is not known"
    )
    blocked = policy.run("oh darn, " + CARD, "input", Vault())
    assert blocked.blocked is not None and blocked.blocked["check"] == "swear"
    # on the output a redaction is a label, not a pseudonym
    assert policy.run(CARD, "output").text == "[REDACTED:NUMBER]"


def test_a_check_applies_only_where_it_says_and_min_score_drops_the_unsure() -> None:
    policy = _policy(
        {"detector": "numbers", "where": "output", "action": "block", "score": 0.6},
        {"detector": "words", "where": "input", "action": "block", "words": ["darn"]},
    )
    assert policy.run(CARD, "input").blocked is None
    assert policy.run("darn", "output").blocked is None
    assert policy.run(CARD, "output").blocked is not None
    sure = _policy({"detector": "numbers", "action": "block", "score": 0.6, "min_score": 0.7})
    assert sure.run(CARD, "output").blocked is None
    assert sure.run(CARD, "output").decisions == []


# -- answer checks --------------------------------------------------------------------------

CONTEXT = (
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. "
    "It is 330 metres tall and was designed by Gustave Eiffel's company."
)


def _rag(answer_format: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "Answer from the context."},
            {"role": "system", "name": "context", "content": CONTEXT},
            {"role": "user", "content": "When was the tower completed?"},
        ]
    }
    if answer_format is not None:
        body["response_format"] = answer_format
    return body


def test_groundedness_flags_the_sentences_the_context_does_not_support() -> None:
    check = Groundedness(threshold=0.5).bind(_rag())
    assert check is not None
    answer = (
        "The Eiffel Tower was completed in 1889 for the World's Fair. "
        "It is 330 metres tall. "
        "The tower was painted bright green by Napoleon during his Egyptian campaign."
    )
    found = check.scan(answer)
    assert len(found) == 1
    assert answer[found[0].start : found[0].end].startswith("The tower was painted")
    assert found[0].score > 0.5
    # a wrong number is not supported: numbers count as written
    assert check.scan("The tower was completed in 1925.") != []
    # no context, nothing to check against
    assert Groundedness().bind({"messages": [{"role": "user", "content": "hi"}]}) is None
    assert context_of(_rag()) == CONTEXT


def test_groundedness_reads_tool_results_when_asked() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "tool", "tool_call_id": "1", "content": "Rain expected in Lyon tomorrow."},
        ]
    }
    assert Groundedness().bind(body) is None
    bound = Groundedness(tools=True).bind(body)
    assert bound is not None and bound.scan("Rain is expected in Lyon tomorrow.") == []


def test_a_json_answer_is_validated_against_the_schema_the_request_asked_for() -> None:
    schema = {
        "type": "object",
        "properties": {"year": {"type": "integer"}, "city": {"type": "string"}},
        "required": ["year", "city"],
    }
    form = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    check = JsonSchema().bind(_rag(form))
    assert check is not None
    assert check.scan('{"year": 1889, "city": "Paris"}') == []
    (wrong,) = check.scan('{"year": "4111 1111 1111 1111", "city": "Paris"}')
    assert (wrong.label, wrong.detail) == ("SCHEMA_MISMATCH", "year: type")  # type: ignore[attr-defined]
    (missing,) = check.scan('{"year": 1889}')
    assert missing.detail == "(root): required"  # type: ignore[attr-defined]
    (broken,) = check.scan('{"year": 18')
    assert broken.label == "INVALID_JSON"
    bare = JsonSchema().bind(_rag({"type": "json_object"}))
    assert bare is not None and bare.scan("[1]")[0].label == "INVALID_JSON"
    assert bare.scan("{}") == []
    assert JsonSchema().bind(_rag()) is None  # no JSON asked for
    with pytest.raises(InvalidInputError, match="not a valid JSON schema"):
        JsonSchema().bind(_rag({"type": "json_schema", "json_schema": {"schema": {"type": 5}}}))


# -- streams --------------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    """The text cut as a model streams it: each word with its leading space."""
    return re.findall(r"\s*\S+", text)


def _stream(guard: StreamGuard, pieces: list[str]) -> tuple[list[str], int | None]:
    """What each piece released, and the index of the piece that stopped the stream."""
    out = []
    for i, piece in enumerate(pieces):
        step = guard.feed(0, piece)
        out.append(step.text)
        if step.stop is not None:
            return out, i
    out.append(guard.feed(0, "", final=True).text)
    return out, None


def _guard(*checks: dict[str, Any], window: int = 64) -> StreamGuard:
    policy = _policy(*checks)
    return StreamGuard(policy.bound({"messages": []}), Vault(), window)


@pytest.mark.parametrize("window", [16, 64])
@pytest.mark.parametrize("opaque", [False, True])
def test_a_number_streamed_token_by_token_stops_the_stream_within_the_bound(
    window: int, opaque: bool
) -> None:
    if opaque:  # a detector that cannot tell where a match begins: the window holds
        register(
            "numbers", lambda s: type("Opaque", (), {"name": "numbers", "scan": Numbers().scan})()
        )
    pieces = _tokens(f"Sure, here it is: {CARD} as you asked, thanks for waiting")
    last_digit = max(i for i, p in enumerate(pieces) if p.strip().isdigit())
    released, stopped = _stream(
        _guard({"detector": "numbers", "action": "block"}, window=window), pieces
    )
    assert stopped is not None
    # the bound: the chunks carrying the SETTLE characters after the match (here: one word)
    assert last_digit < stopped <= last_digit + SETTLE
    assert stopped == last_digit + 1
    sent = "".join(released)
    assert not re.search(r"\d", sent), sent  # none of the number left
    assert sent.startswith("Sure,") or opaque  # the text before it was not held for nothing


def test_a_stream_holds_back_only_what_could_still_begin_a_match() -> None:
    guard = _guard({"detector": "numbers", "action": "redact"})
    assert guard.feed(0, "Your order ").text == "Your order "
    assert guard.feed(0, "number is 12").text == "number is "  # "12" may begin one
    assert guard.feed(0, "3 and the ").text == "123 and the "  # it did not: released
    # a detector that cannot tell holds its window
    opaque = _guard({"detector": "words", "action": "redact", "words": ["darn"]}, window=16)
    assert opaque.feed(0, "a" * 40).text == "a" * 24
    # one of words or phrases holds what begins one of them
    listed = _guard({"detector": "listed", "action": "redact", "words": ["darn it"]})
    assert listed.feed(0, "well da").text == "well "
    assert listed.feed(0, "rn ").text == ""  # "darn " may be "darn it"
    assert listed.feed(0, "good").text == "darn good"
    assert listed.feed(0, " darn it").text == " "  # held until settled
    assert listed.feed(0, " now", final=True).text == "[REDACTED:LISTED] now"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_redacted_stream_is_the_whole_text_redacted_however_it_is_cut(data: Any) -> None:
    text = data.draw(
        st.sampled_from(
            [
                f"card {CARD} and {CARD}.",
                f"{CARD}",
                "pay 5555 5555 5555 4444 now, darn it, or 4111 1111 1111 1112 later",
                "nothing here but darn words and 12 34 numbers",
            ]
        )
    )
    cuts = sorted(data.draw(st.sets(st.integers(1, len(text) - 1), max_size=12)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    checks = (
        {"detector": "numbers", "action": "redact"},
        {"detector": "words", "action": "redact", "words": ["darn"]},
        {"detector": "listed", "action": "redact", "words": ["or 4111", "words and"]},
    )
    released, stopped = _stream(_guard(*checks, window=32), pieces)
    assert stopped is None
    assert "".join(released) == _policy(*checks).run(text, "output").text


def test_a_json_answer_is_held_whole_and_judged_at_its_end() -> None:
    schema = {"type": "object", "required": ["year"]}
    form = {"type": "json_schema", "json_schema": {"schema": schema}}
    policy = _policy({"detector": "json_schema", "action": "block"})
    guard = StreamGuard(policy.bound(_rag(form)), Vault())
    assert [guard.feed(0, p).text for p in ['{"ye', 'ar": ', "1889"]] == ["", "", ""]
    assert guard.feed(0, "}", final=True).text == '{"year": 1889}'
    guard = StreamGuard(policy.bound(_rag(form)), Vault())
    guard.feed(0, '{"city": "Paris"')
    step = guard.feed(0, "}", final=True)
    assert step.stop == "block" and step.text == ""
    assert step.decision is not None and step.decision["detail"] == "(root): required"


def test_log_checks_hold_nothing_and_judge_the_whole_answer_at_its_end() -> None:
    guard = _guard({"detector": "numbers", "action": "log"})
    out = [guard.feed(0, p).text for p in _tokens(f"a b {CARD} c")]
    assert "".join(out) == f"a b {CARD} c" and guard.decisions == []
    assert guard.feed(0, "", final=True).text == ""
    assert [d["action"] for d in guard.decisions] == ["log"]


def test_a_flag_stops_the_stream_and_keeps_the_text_for_the_review() -> None:
    guard = _guard({"detector": "words", "action": "flag", "words": ["lawsuit"]}, window=16)
    released, stopped = _stream(guard, _tokens("we will file a lawsuit tomorrow morning ok"))
    assert stopped is not None and "lawsuit" not in "".join(released)
    assert "lawsuit" in guard.text(0)


def test_pseudonyms_are_put_back_whole_in_a_stream() -> None:
    vault = Vault()
    vault.placeholder("NUMBER", CARD)
    guard = StreamGuard([], vault, 16)
    pieces = ["Your card <NUM", "BER_", "1> is on file"]
    out = [guard.feed(0, p).text for p in pieces] + [guard.feed(0, "", final=True).text]
    assert out[0] == "Your card " and "".join(out) == f"Your card {CARD} is on file"


# -- the built-in detectors in a stream -----------------------------------------------------

VALUES = (
    "card 4111 1111 1111 1111, iban GB82 WEST 1234 5698 7654 32, phone +33 1 42 68 53 00, "
    "mail ann.lee@example.com, nino AB 12 34 56 C, ssn 536-90-4399, ip 192.168.10.1, key "
    "sk-proj-a1B2c3D4e5F6g7H8i9J0kLmN and eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U, said the 3 of us at 10 am."
)
MORE_VALUES = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY----- and "
    "api_key: AKIAIOSFODNN7EXAMPLE, or 4111-1111-1111-1111, (555) 123-4567, 020 7946 0958, "
    "DE89 3704 0044 0532 0130 00 and token=ghp_abcdefghijklmnopqrstuvwxyz0123456789 done"
)
BUILT_IN = (
    {"detector": "pii", "where": "output", "action": "redact"},
    {"detector": "secrets", "where": "output", "action": "redact"},
)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_stream_redacts_the_built_in_detectors_values_however_it_is_cut(data: Any) -> None:
    text, count = data.draw(st.sampled_from([(VALUES, 9), (MORE_VALUES, 7)]))
    points = sorted(data.draw(st.sets(st.integers(1, len(text) - 1), max_size=40)))
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    released, stopped = _stream(_guard(*BUILT_IN), pieces)
    whole = _policy(*BUILT_IN).run(text, "output").text
    assert stopped is None and whole.count("[REDACTED:") == count
    assert "".join(released) == whole


def test_the_built_in_detectors_hold_only_the_value_under_way() -> None:
    guard = _guard(*BUILT_IN)
    assert guard.feed(0, "Sure, happy to help you with that. ").text == (
        "Sure, happy to help you with that. "
    )
    assert guard.feed(0, "Your card 4111 1111").text == "Your card "  # a number's groups
    assert guard.feed(0, " 1111 1111 is").text == "[REDACTED:CREDIT_CARD] "
    assert guard.feed(0, " on file, ann").text == "is on file, "  # "ann" may be an email
