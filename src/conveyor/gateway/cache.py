"""The exact cache: the same request from the same tenant answered once by the upstream.

::

    gateway:
      cache:
        exact: true
        ttl_s: 3600
        scope: key              # or team (the x-conveyor-team header; the key without one)
        allow_sampling: false   # cache temperature > 0 too (an answer is then frozen)

The cache key is the SHA-256 of the request's normalized body: the model asked, the
messages, and every parameter that changes the answer (temperature, top_p, max_tokens,
stop, tools, response_format, seed, n...), with ``stream``, ``stream_options``, ``user``
and ``metadata`` left out, so a streamed and a plain request share an entry; keys are
prefixed by the tenant, so one key's (or team's) answers never reach another. A request
that samples (``temperature`` above 0, or none given: OpenAI's default is 1) is neither
looked up nor stored unless ``allow_sampling``.

A hit answers without an upstream call and is charged nothing (the budgets stage is
inside this one); a streamed request is answered from the entry as OpenAI chunks (its
usage chunk too when asked). A streamed answer is stored once it completed, never a cut
one. Answers carry ``x-conveyor-cache: hit|miss``, the ``llm.call`` event ``cache:
"exact"``, and ``conveyor_llm_cache_total{result}`` counts lookups.

Entries live on the project's cache seam (``backends.cache``: memory, SQLite or Redis,
shared by the workers and servers that share it), with the TTL given.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from conveyor.gateway.types import Chunk, Usage

if TYPE_CHECKING:
    from conveyor.gateway.turn import Outcome, Proceed, Turn

__all__ = ["CacheSpec", "CacheStage"]

log = logging.getLogger("conveyor.gateway")

_IGNORED = frozenset({"stream", "stream_options", "user", "metadata"})


class CacheSpec(BaseModel):
    """``gateway.cache``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exact: bool = Field(False, description="Answer a repeated request from the cache.")
    ttl_s: float = Field(3600.0, gt=0, le=30 * 86400, description="How long an entry lives.")
    scope: Literal["key", "team"] = Field(
        "key", description="Whose answers an entry is shared among (never across tenants)."
    )
    allow_sampling: bool = Field(
        False, description="Cache requests with temperature above 0 (or none) too."
    )


class CacheStage:
    """Looks a chat request up before the call, stores its answer after (see the module)."""

    name = "cache"

    def __init__(self, spec: CacheSpec, kv: Any, registry: Any = None) -> None:
        self.spec = spec
        self.kv = kv
        self._lookups: Any = None
        if registry is not None:
            from prometheus_client import Counter

            self._lookups = Counter(
                "conveyor_llm_cache",
                "Exact-cache lookups of the LLM gateway, by result (hit, miss).",
                ("result",),
                registry=registry,
            )

    def key(self, turn: Turn) -> str | None:
        """The request's entry, or None when it is not cached (it samples)."""
        body = turn.body
        temperature = body.get("temperature", 1.0)
        if not self.spec.allow_sampling and (
            not isinstance(temperature, int | float) or temperature > 0
        ):
            return None
        tenant = turn.team if self.spec.scope == "team" and turn.team else turn.key
        normalized = {k: v for k, v in body.items() if k not in _IGNORED}
        digest = hashlib.sha256(orjson.dumps(normalized, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return f"llm:exact:{self.spec.scope}:{tenant or '-'}:{digest}"

    async def _kv(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = getattr(self.kv, method)
        try:
            if getattr(self.kv, "local", False):
                return call(*args, **kwargs)
            return await asyncio.to_thread(call, *args, **kwargs)
        except Exception as exc:  # a cache that fails is a miss, never an error
            log.warning("LLM cache %s failed: %s", method, exc)
            return None

    def _count(self, result: str) -> None:
        if self._lookups is not None:
            self._lookups.labels(result).inc()

    async def __call__(self, turn: Turn, proceed: Proceed) -> Outcome:
        key = self.key(turn) if turn.endpoint == "chat" else None
        if key is None:
            return await proceed(turn)
        found = await self._kv("get", key)
        if found is not None:
            self._count("hit")
            entry = orjson.loads(found)
            turn.event["cache"] = "exact"
            turn.record.deployment = entry.get("deployment")
            answer = entry["answer"]
            if turn.stream:
                turn.usage = Usage.from_openai(answer.get("usage"))
                return _replay(answer, turn)
            return answer
        self._count("miss")
        turn.event["cache"] = None
        outcome = await proceed(turn)
        if isinstance(outcome, dict):
            await self._store(key, turn, outcome)
            return outcome
        if hasattr(outcome, "__anext__"):
            return self._assembled(key, turn, outcome)
        return outcome

    async def _store(self, key: str, turn: Turn, answer: dict[str, Any]) -> None:
        if any(c.get("finish_reason") == "content_filter" for c in answer.get("choices") or ()):
            return
        entry = {"deployment": turn.record.deployment, "answer": answer}
        await self._kv("set", key, orjson.dumps(entry), ttl=self.spec.ttl_s)

    async def _assembled(
        self, key: str, turn: Turn, chunks: AsyncIterator[Chunk]
    ) -> AsyncIterator[Chunk]:
        texts: dict[int, list[str]] = {}
        finishes: dict[int, str | None] = {}
        usage = None
        first: dict[str, Any] = {}
        try:
            async for chunk in chunks:
                data = chunk.data
                first = first or data
                usage = data.get("usage") or usage
                for choice in data.get("choices") or ():
                    index = int(choice.get("index") or 0)
                    content = (choice.get("delta") or {}).get("content")
                    if isinstance(content, str):
                        texts.setdefault(index, []).append(content)
                    if choice.get("finish_reason"):
                        finishes[index] = choice["finish_reason"]
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        # completed (a cut or cancelled stream never gets here): store what it said
        if texts and len(finishes) == len(texts):
            answer = {
                "id": first.get("id"),
                "object": "chat.completion",
                "created": first.get("created"),
                "model": first.get("model"),
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": "".join(texts[i])},
                        "finish_reason": finishes[i],
                    }
                    for i in sorted(texts)
                ],
                "usage": usage,
            }
            await self._store(key, turn, answer)


async def _replay(answer: dict[str, Any], turn: Turn) -> AsyncIterator[Chunk]:
    """A cached answer as OpenAI chunks: the content, the finish, the usage when asked."""
    base = {
        "id": answer.get("id"),
        "object": "chat.completion.chunk",
        "created": answer.get("created"),
        "model": answer.get("model"),
    }
    for choice in answer.get("choices") or ():
        message = choice.get("message") or {}
        delta = {"role": "assistant", "content": message.get("content") or ""}
        yield Chunk({**base, "choices": [{"index": choice["index"], "delta": delta}]})
        yield Chunk(
            {
                **base,
                "choices": [
                    {
                        "index": choice["index"],
                        "delta": {},
                        "finish_reason": choice["finish_reason"],
                    }
                ],
            }
        )
    options = turn.body.get("stream_options") or {}
    if options.get("include_usage") and answer.get("usage"):
        yield Chunk({**base, "choices": [], "usage": answer["usage"]})
