"""Prompt templates that form a stable prefix, and the report of how often providers'
prompt caches reused it.

Providers cache the longest prefix of a prompt they saw recently (OpenAI from 1,024 tokens,
Anthropic at the breakpoints a request marks, vLLM's automatic prefix caching) and bill
its tokens at the cached-input price. A prefix is reused only when it is the same, byte
for byte: the system prompt first, then what changes least (the retrieved documents),
then the conversation. A template puts them in that order::

    gateway:
      prompts:
        support:
          system: "You are Acme's support assistant. Answer from the documents only."
          context_header: "Documents:"
          context_order: stable     # the same documents form the same text, in any order

and a request names it, with its documents, in the ``conveyor`` extension of the body
(the openai client's ``extra_body``)::

    client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "How do I return an item?"}],
        extra_body={"conveyor": {"prompt": "support",
                                 "context": [{"id": "returns.md#2", "text": "..."}]}},
    )

The gateway renders ``[system, context, *messages]``: the template's system message, the
documents as one system message named ``context`` (what the groundedness guardrail reads),
each as ``[id] text``, sorted by id with ``context_order: stable`` (as given with
``given``), then the caller's messages. The ``conveyor`` extension never reaches the
upstream. A request with a ``conveyor`` extension and no such template is a 400.

Every chat call's ``llm.call`` event carries ``prefix`` (a digest of its leading system
and developer messages: what a provider can cache across calls), ``prefix_tokens`` (an
estimate) and ``prompt`` (the template's name); with the upstream's ``cached_tokens``
:func:`prefix_report` (``conveyor llm prefixes``, ``GET /v1/llm/prefixes``) says per
model and prefix how many calls shared it and how many of them the provider's cache
served.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = ["EXTENSION", "PromptSpec", "Prompts", "prefix_of", "prefix_report"]

#: The key of the request body that holds Conveyor's extension (removed before the call).
EXTENSION = "conveyor"

_LEADING = frozenset({"system", "developer"})


class PromptSpec(BaseModel):
    """One template of ``gateway.prompts``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str = Field(
        min_length=1, description="The system message: first, the same on every call."
    )
    context_header: str = Field(
        "Documents:", description="The line before the documents in the context message."
    )
    context_order: Literal["stable", "given"] = Field(
        "stable",
        description="stable: documents sorted by id, so the same set is the same text "
        "(and prefix) whatever order retrieval ranked them in; given: as sent.",
    )
    max_documents: int = Field(
        50, ge=1, le=1000, description="Most documents a request may send (more: 400)."
    )


def _bad(message: str, param: str) -> InvalidInputError:
    return InvalidInputError(message, field=param)


class Prompts:
    """Renders a request's template (see the module)."""

    def __init__(self, templates: dict[str, PromptSpec]) -> None:
        self.templates = templates

    def render(self, body: dict[str, Any]) -> str | None:
        """Take the ``conveyor`` extension out of ``body`` and, when it names a template,
        put the template's messages before the caller's; the template's name, or None."""
        extension = body.pop(EXTENSION, None)
        if extension is None:
            return None
        if not isinstance(extension, dict):
            raise _bad("'conveyor' is an object: {prompt, context}", EXTENSION)
        unknown = sorted(set(extension) - {"prompt", "context"})
        if unknown:
            raise _bad(f"'conveyor' has no field {unknown[0]!r} (prompt, context)", EXTENSION)
        name = extension.get("prompt")
        if not isinstance(name, str):
            raise _bad("'conveyor.prompt' names a template of gateway.prompts", "conveyor.prompt")
        template = self.templates.get(name)
        if template is None:
            known = ", ".join(sorted(self.templates)) or "none: add gateway.prompts"
            raise _bad(f"no prompt template {name!r} (templates: {known})", "conveyor.prompt")
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise _bad("'messages' is a list of messages", "messages")
        rendered: list[dict[str, Any]] = [{"role": "system", "content": template.system}]
        documents = _documents(extension.get("context"), template)
        if documents:
            text = "\n\n".join(f"[{doc_id}] {doc_text}" for doc_id, doc_text in documents)
            rendered.append(
                {
                    "role": "system",
                    "name": "context",
                    "content": f"{template.context_header}\n\n{text}",
                }
            )
        body["messages"] = rendered + messages
        return name


def _documents(given: Any, template: PromptSpec) -> list[tuple[str, str]]:
    if given is None:
        return []
    if not isinstance(given, list):
        raise _bad("'conveyor.context' is a list of documents", "conveyor.context")
    if len(given) > template.max_documents:
        raise _bad(
            f"'conveyor.context' holds {len(given)} documents; the template takes at most "
            f"{template.max_documents}",
            "conveyor.context",
        )
    found = []
    for i, doc in enumerate(given):
        if isinstance(doc, str):
            found.append((str(i + 1), doc))
        elif (
            isinstance(doc, dict)
            and isinstance(doc.get("text"), str)
            and isinstance(doc.get("id", ""), str | int)
            and not set(doc) - {"id", "text"}
        ):
            found.append((str(doc.get("id", i + 1)), doc["text"]))
        else:
            raise _bad(
                f"conveyor.context[{i}] is a string or an object {{id, text}}",
                f"conveyor.context[{i}]",
            )
    if template.context_order == "stable":
        found.sort()
    return found


def prefix_of(body: dict[str, Any]) -> tuple[str | None, int]:
    """The digest of a chat request's leading system and developer messages (16 hex
    characters; None when it starts with none) and an estimate of their tokens."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None, 0
    leading = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in _LEADING:
            break
        leading.append(message)
    if not leading:
        return None, 0
    raw = orjson.dumps(leading, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(raw, digest_size=8).hexdigest(), math.ceil(len(raw) / 3)


def prefix_report(
    project: Project,
    *,
    since: datetime,
    until: datetime | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Per model and prefix, from the ``llm.call`` events of a period: the calls that sent
    it, the template, the prefix's estimated tokens, the prompt and cached tokens the
    upstreams counted, the calls the provider's prompt cache served (``cached_calls``,
    with some cached tokens), and ``hit_rate`` (cached calls over the calls after the
    first, which no cache could serve) and ``cached_share`` (cached over prompt tokens).
    The most called first; answers from Conveyor's own caches are left out (no upstream
    call)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for event in project.events.iter(kind="llm.call", since=since, until=until):
        payload = event.payload
        prefix = payload.get("prefix")
        if prefix is None or payload.get("endpoint") != "chat" or payload.get("cache"):
            continue
        if model is not None and payload.get("model") != model:
            continue
        if payload.get("status") != "ok":
            continue
        row = rows.setdefault(
            (str(payload.get("model")), prefix),
            {
                "model": payload.get("model"),
                "prefix": prefix,
                "prompt": payload.get("prompt"),
                "prefix_tokens": int(payload.get("prefix_tokens") or 0),
                "calls": 0,
                "cached_calls": 0,
                "prompt_tokens": 0,
                "cached_tokens": 0,
                "deployments": set(),
            },
        )
        row["calls"] += 1
        cached = int(payload.get("cached_tokens") or 0)
        row["cached_calls"] += cached > 0
        row["prompt_tokens"] += int(payload.get("prompt_tokens") or 0)
        row["cached_tokens"] += cached
        if payload.get("deployment"):
            row["deployments"].add(payload["deployment"])
    found = []
    for row in rows.values():
        row["deployments"] = sorted(row["deployments"])
        reusable = row["calls"] - 1
        row["hit_rate"] = round(row["cached_calls"] / reusable, 4) if reusable else None
        row["cached_share"] = (
            round(row["cached_tokens"] / row["prompt_tokens"], 4) if row["prompt_tokens"] else None
        )
        found.append(row)
    return sorted(found, key=lambda r: (-r["calls"], r["model"], r["prefix"]))
