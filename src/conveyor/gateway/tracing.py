"""OpenTelemetry spans of the gateway's upstream calls, after the GenAI semantic conventions.

Each call the router makes to a deployment (a retry, a fallback: each attempt) is one
``CLIENT`` span, a child of the request's span (``POST /llm/v1/chat/completions``, made by
:class:`conveyor.web.pipeline.Observe`), named ``{operation} {model}`` (``chat gpt-4o-mini``)
and ended when the answer, or the stream's last chunk, came::

    gen_ai.operation.name          chat | embeddings
    gen_ai.provider.name           openai | anthropic | transformers (the local provider)
    gen_ai.system                  the same (its name before semantic conventions 1.37)
    gen_ai.request.model           the deployment's model, as sent upstream
    gen_ai.request.max_tokens, .temperature, .top_p, .stop_sequences, .seed,
      .frequency_penalty, .presence_penalty, .choice.count (n, when not 1), .stream,
      .encoding_formats (embeddings)
    gen_ai.output.type             json, when response_format asks for JSON
    gen_ai.conversation.id         the x-conveyor-conversation header
    gen_ai.response.model, .id, .finish_reasons, .time_to_first_chunk (seconds, streams)
    gen_ai.usage.input_tokens, .output_tokens, .cache_read.input_tokens
    gen_ai.embeddings.dimension.count
    server.address, server.port    the upstream (OpenAI-compatible and Anthropic providers)
    error.type                     the failure's kind (timeout, server, rate_limited...),
                                   cancelled (the client went away) or the exception's
                                   class; the span's status ERROR
    http.response.status_code      the upstream's status, when it answered one
    conveyor.llm.alias             the model the request named
    conveyor.llm.deployment        the deployment called
    conveyor.llm.attempt           1, 2...: the attempt within the request

Prompts and answers are never put on spans (they may hold personal data).

**Costs nothing when tracing is off.** The tracer is taken when the server starts, by the
request pipeline's rule: a process that configured tracing (``opentelemetry-instrument``,
or code that set a tracer provider) has imported OpenTelemetry by then; one that has not
gets no tracer, and the router makes no span at all (a ``None`` check per attempt).
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from conveyor.gateway.types import Chunk, UpstreamError

if TYPE_CHECKING:
    from conveyor.gateway.router import CallRecord
    from conveyor.gateway.settings import ProviderSpec
    from conveyor.gateway.types import Body, Deployment

__all__ = ["UpstreamSpan", "provider_attributes", "tracer"]

#: Provider kinds -> gen_ai.provider.name (the conventions' well-known values; the local
#: transformers model has none: a custom one).
_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "local": "transformers"}

#: Request fields -> their attributes (when the request gives them).
_REQUEST = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("seed", "gen_ai.request.seed"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
)


def tracer() -> Any:
    """The gateway's tracer if the process configured tracing, else None (see the module)."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    return trace.get_tracer("conveyor.gateway")


def provider_attributes(spec: ProviderSpec) -> dict[str, Any]:
    """What every span of a provider carries: its name and, for a remote one, its server."""
    name = _PROVIDER_NAMES.get(spec.kind, spec.kind)
    found: dict[str, Any] = {"gen_ai.provider.name": name, "gen_ai.system": name}
    base = spec.settings().get("base_url")
    if isinstance(base, str):
        parts = urlsplit(base)
        if parts.hostname:
            found["server.address"] = parts.hostname
            found["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return found


class UpstreamSpan:
    """One attempt's span: started before the call, ended by :meth:`answered`,
    :meth:`failed` or (a stream) :meth:`end` after its last chunk."""

    __slots__ = ("_finish", "_id", "_model", "_started", "_usage", "span")

    def __init__(
        self,
        tracer: Any,
        operation: str,
        deployment: Deployment,
        provider: dict[str, Any],
        body: Body,
        call: CallRecord,
        attempt: int,
    ) -> None:
        from opentelemetry.trace import SpanKind

        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            **provider,
            "gen_ai.request.model": deployment.model,
            "conveyor.llm.alias": call.model,
            "conveyor.llm.deployment": deployment.name,
            "conveyor.llm.attempt": attempt,
        }
        if call.conversation is not None:
            attributes["gen_ai.conversation.id"] = call.conversation
        if operation == "chat":
            _request_attributes(body, attributes)
        else:
            encoding = body.get("encoding_format")
            if isinstance(encoding, str):
                attributes["gen_ai.request.encoding_formats"] = [encoding]
        self.span = tracer.start_span(
            f"{operation} {deployment.model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        self._started = time.perf_counter()
        self._finish: dict[int, str] = {}
        self._model: str | None = None
        self._id: str | None = None
        self._usage: dict[str, Any] | None = None

    # -- an answer --------------------------------------------------------------------

    def answered(self, answer: Body) -> None:
        """A whole answer (a chat completion, embeddings): its attributes; the span ends."""
        self._note(answer)
        for choice in answer.get("choices") or ():
            if isinstance(choice, dict):
                self._finished(choice)
        data = answer.get("data")
        if isinstance(data, list) and data and isinstance(data[0], dict):
            dimensions = _dimensions(data[0].get("embedding"))
            if dimensions is not None:
                self.span.set_attribute("gen_ai.embeddings.dimension.count", dimensions)
        self.end()

    # -- a stream ---------------------------------------------------------------------

    def first_chunk(self) -> None:
        self.span.set_attribute(
            "gen_ai.response.time_to_first_chunk", round(time.perf_counter() - self._started, 6)
        )

    def chunk(self, chunk: Chunk) -> None:
        """One streamed chunk: its model, id, finish reasons and usage noted."""
        data = chunk.data
        if self._model is None:
            self._note(data)
        elif "usage" in data:
            self._usage = data["usage"]
        for choice in data.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self._finished(choice)

    # -- the end ----------------------------------------------------------------------

    def failed(self, exc: BaseException) -> None:
        """The attempt failed, or was cancelled (``error.type`` cancelled: the client went
        away): ``error.type``, status ERROR; the span ends."""
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        if isinstance(exc, GeneratorExit | asyncio.CancelledError):
            span.set_attribute("error.type", "cancelled")
            message = "cancelled: the client went away"
        elif isinstance(exc, UpstreamError):
            span.set_attribute("error.type", exc.kind)
            if exc.status is not None:
                span.set_attribute("http.response.status_code", exc.status)
            message = exc.message
        else:
            span.set_attribute("error.type", type(exc).__qualname__)
            message = str(exc) or type(exc).__qualname__
        span.set_status(Status(StatusCode.ERROR, message))
        self.end()

    def end(self) -> None:
        """What was gathered set on the span, which ends (a second call does nothing)."""
        span = self.span
        if not span.is_recording():
            return
        if self._model is not None:
            span.set_attribute("gen_ai.response.model", self._model)
        if self._id is not None:
            span.set_attribute("gen_ai.response.id", self._id)
        if self._finish:
            span.set_attribute(
                "gen_ai.response.finish_reasons", [self._finish[i] for i in sorted(self._finish)]
            )
        usage = self._usage
        if isinstance(usage, dict):
            _usage_attributes(usage, span)
        span.end()

    def _note(self, data: Body) -> None:
        model, found = data.get("model"), data.get("id")
        if isinstance(model, str):
            self._model = model
        if isinstance(found, str):
            self._id = found
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]

    def _finished(self, choice: dict[str, Any]) -> None:
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            index = choice.get("index")
            self._finish[index if isinstance(index, int) else len(self._finish)] = reason


def _request_attributes(body: Body, attributes: dict[str, Any]) -> None:
    for field, name in _REQUEST:
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = stop
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        attributes["gen_ai.request.choice.count"] = n
    if body.get("stream"):
        attributes["gen_ai.request.stream"] = True
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind in ("json_object", "json_schema"):
            attributes["gen_ai.output.type"] = "json"
        elif kind == "text":
            attributes["gen_ai.output.type"] = "text"


def _dimensions(vector: Any) -> int | None:
    """An embedding's length: a list of floats, or base64 of float32s (the openai client
    asks for base64)."""
    if isinstance(vector, list):
        return len(vector)
    if isinstance(vector, str):
        try:
            return len(base64.b64decode(vector, validate=True)) // 4
        except ValueError:
            return None
    return None


def _usage_attributes(usage: dict[str, Any], span: Any) -> None:
    for field, name in (
        ("prompt_tokens", "gen_ai.usage.input_tokens"),
        ("completion_tokens", "gen_ai.usage.output_tokens"),
    ):
        value = usage.get(field)
        if isinstance(value, int):
            span.set_attribute(name, value)
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        span.set_attribute("gen_ai.usage.cache_read.input_tokens", details["cached_tokens"])
