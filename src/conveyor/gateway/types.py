"""The gateway's contracts: what a provider is, what it streams, and how it fails.

Requests and answers keep OpenAI's JSON shapes end to end (``dict``), so a body the
gateway does not understand field by field (tools, ``response_format``, a provider's
extension) is passed through unchanged; only the fields the gateway acts on are read
(``model``, ``messages``, ``stream``, ``max_tokens``/``max_completion_tokens``, ``n``,
``stream_options``, ``user``).

A provider turns such a body into a call to one upstream *deployment* (a provider's
model) and answers in OpenAI's shapes, whatever the upstream speaks (Anthropic's
Messages API is translated both ways; the local transformers model is run here).
Streams yield :class:`Chunk`\\ s: the parsed chunk (for usage, guardrails and accounting)
and, for upstreams that already speak OpenAI's format, the raw SSE ``data:`` payload,
which the API writes as it came (no re-serialization, no added buffering).

A provider reports a failure the gateway may act on (fall back to the next deployment,
cool the deployment down, honour ``Retry-After``) as :class:`UpstreamError`; any other
exception is a bug and answers 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "Chunk",
    "Deployment",
    "FailureKind",
    "Provider",
    "UpstreamError",
    "Usage",
]

Body = dict[str, Any]

#: Why an upstream call failed; the gateway decides from it whether to fall back
#: (every kind but ``bad_request``), retry (``connect`` and ``rate_limited`` before the
#: first streamed byte) and count a failure against the deployment's circuit breaker
#: (``connect``, ``timeout``, ``server``, ``protocol``).
FailureKind = Literal[
    "connect",  # the connection was refused or reset before any answer
    "timeout",  # no answer (or no next chunk) within the deployment's timeout
    "rate_limited",  # 429 from the upstream (retry_after_s when it said)
    "server",  # 5xx from the upstream
    "bad_request",  # 4xx other than 429: the request itself is wrong; never fall back
    "protocol",  # an answer that is not what the API promises (garbage, a cut stream)
]


class UpstreamError(Exception):
    """An upstream call failed in a way the gateway handles (see :data:`FailureKind`)."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        deployment: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        streamed: bool = False,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.deployment = deployment
        #: The upstream's HTTP status, when it answered one.
        self.status = status
        #: The upstream's Retry-After, in seconds.
        self.retry_after_s = retry_after_s
        #: Whether part of a stream had reached the client: no retry or fallback then.
        self.streamed = streamed
        #: The upstream's error body (OpenAI-shaped when it speaks OpenAI), for 4xx
        #: answers passed back to the client.
        self.body = body


@dataclass(slots=True)
class Usage:
    """Tokens of one call, as the upstream counted them (or the gateway, when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Prompt tokens the upstream served from its prompt cache (priced apart).
    cached_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage | None:
        if not usage:
            return None
        details = usage.get("prompt_tokens_details") or {}
        return cls(
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
            int(details.get("cached_tokens") or 0),
        )


@dataclass(slots=True)
class Chunk:
    """One streamed chunk: OpenAI's ``chat.completion.chunk`` object, and the raw bytes of
    its SSE ``data:`` payload when the upstream sent it in that format (written to the
    client as they came)."""

    data: dict[str, Any]
    raw: bytes | None = None

    @property
    def usage(self) -> Usage | None:
        return Usage.from_openai(self.data.get("usage"))

    def text(self) -> str:
        """The content the chunk adds, over its choices (for guardrails and counting)."""
        parts = []
        for choice in self.data.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                parts.append(content)
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream model a request can be sent to: a provider and the model name there.

    ``name`` is how routes, events and breakers refer to it (``openai/gpt-4o-mini``)."""

    name: str
    provider: str
    model: str
    timeout_s: float = 60.0
    #: Seconds to wait for the first byte of an answer (or a stream's first chunk).
    first_byte_timeout_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """A kind of upstream (OpenAI-compatible, Anthropic, local transformers).

    One provider object serves every deployment of its kind; it keeps its own
    connection pool. Every method takes the OpenAI-shaped body (its ``model`` already
    replaced by ``deployment.model``) and answers in OpenAI's shapes; failures the
    gateway acts on are :class:`UpstreamError`."""

    name: str

    async def chat(self, body: Body, deployment: Deployment) -> Body:
        """A non-streaming chat completion (``chat.completion`` object, with ``usage``)."""
        ...

    def stream(self, body: Body, deployment: Deployment) -> AsyncIterator[Chunk]:
        """A streaming chat completion: its chunks, in order; the last carries ``usage``
        with ``choices: []`` when the body asks ``stream_options.include_usage``.
        Closing the iterator early (``aclose()``: the client went away) closes the
        upstream stream at once."""
        ...

    async def embeddings(self, body: Body, deployment: Deployment) -> Body:
        """An embeddings answer (``list`` of ``embedding`` objects, with ``usage``)."""
        ...

    async def aclose(self) -> None:
        """Close connections and stop what the provider runs."""
        ...
