"""Checks of an answer against its own request: groundedness in the retrieved context, and
the JSON schema the request asked for. They are output checks of a policy
(:mod:`conveyor.guardrails.policy`) like any detector, but each is *bound* to the request
first (:meth:`bind`): a request that carries no context, or asks for no JSON, skips them.

- ``groundedness`` (label ``UNGROUNDED``): each sentence of the answer is scored by how
  much of it the context supports: the share of its content words (lower case, stop words
  left out, a plural's ``s`` and ``ed``/``ing`` endings dropped; numbers as written) that
  the context contains; a number of two digits or more that the context does not hold
  makes it unsupported (a made-up year, price or dose). A sentence of at least
  ``min_words`` content words supported below ``threshold`` (0.5) is a finding whose
  score is ``1 - support``. The context is
  the text of every message named ``context`` (``{"role": "system", "name": "context",
  "content": "..."}``: OpenAI's ``name`` field, passed upstream unchanged), and of tool
  results with ``tools: true``. Lexical, so a paraphrase with other words scores low: a
  check to flag for review, not to block on.
- ``json_schema`` (labels ``INVALID_JSON``, ``SCHEMA_MISMATCH``): with ``response_format:
  {"type": "json_schema", "json_schema": {"schema": ...}}`` the answer must parse and
  validate against the schema (``jsonschema``, the schema's own draft, 2020-12 when it
  names none); with ``{"type": "json_object"}`` it must parse as a JSON object. The
  finding spans the whole answer; its ``detail`` names where it failed
  (``items/0/price: type``), never the value.

Both tell a stream's scanner how much of the text to hold back (:meth:`pending`): the
sentence under way, or the whole answer (a JSON answer is judged whole).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from conveyor.guardrails.types import Finding

__all__ = ["ANSWER_CHECKS", "Groundedness", "JsonSchema", "Mismatch", "context_of", "support"]


@dataclass(frozen=True, slots=True)
class Mismatch(Finding):
    """A finding with a detail that names what failed without quoting the text."""

    detail: str = ""


_STOP = frozenset(
    """a an the and or but if then else of to in on at by for with from as is are was were be
    been being am do does did has have had having it its this that these those there here what
    which who whom whose when where why how i you he she we they me him her us them my your his
    our their not no nor so than too very can could will would shall should may might must also
    just only about into over under up down out off again more most some any all each both few
    other such own same s t don now yes""".split()  # noqa: SIM905
)
_WORD = re.compile(r"[^\W_]+(?:[.,'][^\W_]+)*")
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+(?=\s|$)|\n|$)")


def _stem(word: str) -> str:
    for ending, least in (("ing", 6), ("ed", 5), ("es", 5), ("s", 4)):
        if word.endswith(ending) and len(word) >= least:
            return word[: -len(ending)]
    return word


def _content_words(text: str) -> list[str]:
    words = []
    for match in _WORD.finditer(text.lower()):
        word = match.group()
        if word in _STOP or (len(word) < 2 and not word.isdigit()):
            continue
        words.append(word if any(c.isdigit() for c in word) else _stem(word))
    return words


def support(sentence: str, context: frozenset[str]) -> tuple[float, int]:
    """The share of the sentence's content words the context holds (0 when it states a
    number of two digits or more that the context does not), and how many it has."""
    words = _content_words(sentence)
    if not words:
        return 1.0, 0
    if any(sum(c.isdigit() for c in w) >= 2 and w not in context for w in words):
        return 0.0, len(words)
    return sum(w in context for w in words) / len(words), len(words)


def context_of(body: dict[str, Any], *, tools: bool = False) -> str | None:
    """The retrieved context a chat request carries (see the module), or None."""
    parts = []
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        if message.get("name") == "context" or (tools and message.get("role") == "tool"):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    p["text"]
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    return "\n".join(parts) if parts else None


class _BoundGroundedness:
    name = "groundedness"

    def __init__(self, check: Groundedness, context: str) -> None:
        self._check = check
        self._context = frozenset(_content_words(context))

    def scan(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        for match in _SENTENCE.finditer(text):
            sentence = match.group()
            if not sentence.strip():
                continue
            share, words = support(sentence, self._context)
            if words >= self._check.min_words and share < self._check.threshold:
                start = match.start() + len(sentence) - len(sentence.lstrip())
                found.append(
                    Finding(self.name, "UNGROUNDED", start, match.end(), round(1.0 - share, 4))
                )
        return found

    def pending(self, text: str) -> int:
        """The sentence under way: what follows the last sentence's end."""
        ends = [m.end() for m in re.finditer(r"[.!?]+\s|\n", text)]
        return len(text) - (ends[-1] if ends else 0)


class Groundedness:
    """Bound to a request's context, scores the answer's sentences (see the module)."""

    name = "groundedness"

    def __init__(self, threshold: float = 0.5, min_words: int = 3, tools: bool = False) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold is above 0 and at most 1, got {threshold!r}")
        if min_words < 1:
            raise ValueError(f"min_words is at least 1, got {min_words!r}")
        self.threshold = float(threshold)
        self.min_words = int(min_words)
        self.tools = bool(tools)

    def bind(self, body: dict[str, Any]) -> _BoundGroundedness | None:
        context = context_of(body, tools=self.tools)
        return None if context is None else _BoundGroundedness(self, context)


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    import json

    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


class _BoundSchema:
    name = "json_schema"
    whole = True

    def __init__(self, schema_json: str | None) -> None:
        self._schema_json = schema_json

    def scan(self, text: str) -> list[Finding]:
        import json

        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return [Mismatch(self.name, "INVALID_JSON", 0, len(text), 1.0, f"not JSON: {exc.msg}")]
        if self._schema_json is None:
            if isinstance(value, dict):
                return []
            return [Mismatch(self.name, "INVALID_JSON", 0, len(text), 1.0, "not a JSON object")]
        import jsonschema

        error = jsonschema.exceptions.best_match(_validator(self._schema_json).iter_errors(value))
        if error is None:
            return []
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return [
            Mismatch(self.name, "SCHEMA_MISMATCH", 0, len(text), 1.0, f"{where}: {error.validator}")
        ]

    def pending(self, text: str) -> int:
        return len(text)  # judged whole: nothing leaves before the end


class JsonSchema:
    """Bound to a request's ``response_format``, validates the answer (see the module)."""

    name = "json_schema"

    def bind(self, body: dict[str, Any]) -> _BoundSchema | None:
        import json

        from conveyor.errors import InvalidInputError

        form = body.get("response_format")
        if not isinstance(form, dict):
            return None
        if form.get("type") == "json_object":
            return _BoundSchema(None)
        if form.get("type") != "json_schema":
            return None
        schema = (form.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            return _BoundSchema(None)
        schema_json = json.dumps(schema, sort_keys=True)
        try:
            _validator(schema_json)
        except Exception as exc:  # jsonschema's SchemaError: the caller's mistake
            message = getattr(exc, "message", str(exc))
            raise InvalidInputError(
                f"response_format.json_schema.schema is not a valid JSON schema: {message}",
                field="response_format",
            ) from None
        return _BoundSchema(schema_json)


def _groundedness(settings: dict[str, Any]) -> Groundedness:
    return Groundedness(**settings)


def _json_schema(settings: dict[str, Any]) -> JsonSchema:
    if settings:
        raise ValueError(f"json_schema takes no settings, got {', '.join(settings)}")
    return JsonSchema()


#: Name -> factory(settings): the answer checks, output only, bound to each request.
ANSWER_CHECKS = {"groundedness": _groundedness, "json_schema": _json_schema}
