"""The exact cache: the same request from the same tenant answered once by the upstream
(and the semantic cache's lookups, :mod:`conveyor.gateway.semantic`, after it).

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
"exact"`` (or ``"semantic"``), and ``conveyor_llm_cache_total{kind, result}`` counts
lookups.

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

from conveyor.gateway.semantic import SemanticSpec, split_question
from conveyor.gateway.types import Chunk, Usage

if TYPE_CHECKING:
    from conveyor.gateway.semantic import SemanticIndex
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
    semantic: SemanticSpec | None = Field(
        None,
        description="The semantic cache: a question asked again in other words, in the same "
        "context, answered from the cache (conveyor.gateway.semantic).",
    )

    @property
    def any(self) -> bool:
        return self.exact or self.semantic is not None


class _Lookup:
    """What one request's lookup found out: where its answer goes once it has one."""

    __slots__ = ("exact", "space", "vector")

    def __init__(self, exact: str | None, space: str | None, vector: Any) -> None:
        self.exact = exact
        self.space = space
        self.vector = vector


class CacheStage:
    """Looks a chat request up before the call (exact, then semantic), stores its answer
    after (see the module and :mod:`conveyor.gateway.semantic`)."""

    name = "cache"

    def __init__(
        self,
        spec: CacheSpec,
        kv: Any,
        registry: Any = None,
        semantic: SemanticIndex | None = None,
    ) -> None:
        self.spec = spec
        self.kv = kv
        self.semantic = semantic
        self._lookups: Any = None
        if registry is not None:
            from prometheus_client import Counter

            self._lookups = Counter(
                "conveyor_llm_cache",
                "Cache lookups of the LLM gateway, by cache (exact, semantic) and result "
                "(hit, miss).",
                ("kind", "result"),
                registry=registry,
            )

    def _tenant(self, turn: Turn) -> str:
        tenant = turn.team if self.spec.scope == "team" and turn.team else turn.key
        return f"{self.spec.scope}:{tenant or '-'}"

    def _samples(self, body: dict[str, Any]) -> bool:
        temperature = body.get("temperature", 1.0)
        return not self.spec.allow_sampling and (
            not isinstance(temperature, int | float) or temperature > 0
        )

    def key(self, turn: Turn) -> str | None:
        """The request's exact entry, or None when it is not cached (it samples)."""
        if self._samples(turn.body):
            return None
        normalized = {k: v for k, v in turn.body.items() if k not in _IGNORED}
        digest = hashlib.sha256(orjson.dumps(normalized, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return f"llm:exact:{self._tenant(turn)}:{digest}"

    async def _kv(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = getattr(self.kv, method)
        try:
            if getattr(self.kv, "local", False):
                return call(*args, **kwargs)
            return await asyncio.to_thread(call, *args, **kwargs)
        except Exception as exc:  # a cache that fails is a miss, never an error
            log.warning("LLM cache %s failed: %s", method, exc)
            return None

    def _count(self, kind: str, result: str) -> None:
        if self._lookups is not None:
            self._lookups.labels(kind, result).inc()

    def _hit(self, turn: Turn, found: bytes, kind: str) -> Outcome:
        self._count(kind, "hit")
        entry = orjson.loads(found)
        turn.event["cache"] = kind
        turn.record.deployment = entry.get("deployment")
        answer = entry["answer"]
        if turn.stream:
            turn.usage = Usage.from_openai(answer.get("usage"))
            return _replay(answer, turn)
        return answer

    async def __call__(self, turn: Turn, proceed: Proceed) -> Outcome:
        if turn.endpoint != "chat" or self._samples(turn.body):
            return await proceed(turn)
        exact = self.key(turn) if self.spec.exact else None
        if exact is not None:
            found = await self._kv("get", exact)
            if found is not None:
                return self._hit(turn, found, "exact")
            self._count("exact", "miss")
        space = vector = None
        if self.semantic is not None:
            split = split_question({k: v for k, v in turn.body.items() if k not in _IGNORED})
            match = None
            if split is not None:
                space = self.semantic.space_of(self._tenant(turn), split[0])
                try:  # embedded and searched in a thread: ~1 ms, and more with many entries
                    vector, match = await asyncio.to_thread(self.semantic.lookup, space, split[1])
                except Exception as exc:  # an encoder that fails is a miss
                    log.warning("LLM semantic cache: embedding failed: %s", exc)
                    space = None
            if space is not None:
                if match is not None:
                    found = await self._kv("get", match.entry)
                    if found is not None:
                        turn.event["cache_similarity"] = match.similarity
                        return self._hit(turn, found, "semantic")
                    self.semantic.forget(space, match.entry)  # its answer expired
                self._count("semantic", "miss")
        turn.event["cache"] = None
        lookup = _Lookup(exact, space, vector)
        outcome = await proceed(turn)
        if isinstance(outcome, dict):
            await self._store(lookup, turn, outcome)
            return outcome
        if hasattr(outcome, "__anext__"):
            return self._assembled(lookup, turn, outcome)
        return outcome

    async def _store(self, lookup: _Lookup, turn: Turn, answer: dict[str, Any]) -> None:
        if any(c.get("finish_reason") == "content_filter" for c in answer.get("choices") or ()):
            return
        entry = orjson.dumps({"deployment": turn.record.deployment, "answer": answer})
        if lookup.exact is not None:
            await self._kv("set", lookup.exact, entry, ttl=self.spec.ttl_s)
        if lookup.space is not None and self.semantic is not None:
            name = self.semantic.add(lookup.space, lookup.vector)
            await self._kv("set", name, entry, ttl=self.spec.ttl_s)

    async def _assembled(
        self, lookup: _Lookup, turn: Turn, chunks: AsyncIterator[Chunk]
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
            await self._store(lookup, turn, answer)


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
