"""Anthropic's Messages API behind the gateway's OpenAI shapes, translated both ways.

A chat body in OpenAI's format becomes a ``POST /v1/messages`` request
(:func:`to_anthropic`): system and developer messages move to ``system``, ``tool``
messages become ``tool_result`` blocks in a user turn, an assistant's ``tool_calls``
become ``tool_use`` blocks, images become ``image`` blocks, ``stop`` becomes
``stop_sequences``, ``tools``/``tool_choice`` are rewritten, and ``max_tokens`` (which
Anthropic requires) falls back to the provider's default. The answer comes back as a
``chat.completion`` (:func:`from_anthropic`), a stream's server-sent events as
``chat.completion.chunk`` objects (:class:`StreamTranslator`), with usage mapped so that
``prompt_tokens`` counts every input token, cached ones included, and
``prompt_tokens_details.cached_tokens`` the ones read from Anthropic's prompt cache.

Failures are :class:`~conveyor.gateway.types.UpstreamError`\\ s: 429 is ``rate_limited``
with its ``retry-after``, 529 (overloaded) and 5xx are ``server``, another 4xx is
``bad_request`` carrying the error in OpenAI's shape, an ``error`` event mid-stream takes
the kind of its type, and a stream that ends without ``message_stop`` is ``protocol``.

Settings (the provider's entry in the spec)::

    base_url: https://api.anthropic.com   # the default
    api_key_env: ANTHROPIC_API_KEY        # the variable holding the key (read at start)
    version: "2023-06-01"                 # the anthropic-version header
    max_tokens: 4096                      # when the request names none
    connect_timeout_s: 5.0
    max_connections: 100
    http2: null                           # null: HTTP/2 when the h2 package is installed
    beta: []                              # anthropic-beta features, e.g. prompt-caching
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.util
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.errors import ConfigError
from conveyor.gateway.types import Body, Chunk, Deployment, FailureKind, UpstreamError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "FINISH_REASONS",
    "AnthropicProvider",
    "AnthropicSettings",
    "StreamTranslator",
    "from_anthropic",
    "to_anthropic",
]

#: Anthropic's ``stop_reason`` -> OpenAI's ``finish_reason``.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Anthropic's error types, when they come inside a 200 stream (an ``error`` event).
_ERROR_KINDS: dict[str, FailureKind] = {
    "overloaded_error": "server",
    "api_error": "server",
    "rate_limit_error": "rate_limited",
    "timeout_error": "timeout",
}


class AnthropicSettings(BaseModel):
    """The provider's settings, as the spec gives them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field("https://api.anthropic.com", description="The API's root URL.")
    api_key_env: str = Field(
        "ANTHROPIC_API_KEY", description="The environment variable holding the API key."
    )
    version: str = Field("2023-06-01", description="The anthropic-version header.")
    max_tokens: int = Field(
        4096, gt=0, description="max_tokens sent when the request names none (Anthropic needs one)."
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Seconds to open a connection.")
    max_connections: int = Field(100, gt=0, description="Connections kept in the pool, at most.")
    http2: bool | None = Field(
        None, description="Speak HTTP/2; None: when the h2 package is installed."
    )
    beta: list[str] = Field(default_factory=list, description="anthropic-beta features to turn on.")


# --- OpenAI -> Anthropic ---------------------------------------------------------------


def _bad(message: str, deployment: str, param: str | None = None) -> UpstreamError:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    body["error"]["param"] = param
    return UpstreamError("bad_request", message, deployment=deployment, status=400, body=body)


def _image(part: dict[str, Any], deployment: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise _bad("an image_url part needs a url", deployment, "messages")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0]
        if ";base64" not in header or not data:
            raise _bad("an image data URL must be base64", deployment, "messages")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any, deployment: str) -> list[dict[str, Any]]:
    """An OpenAI message's content (a string or a list of parts) as Anthropic blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad("a message's content is a string or a list of parts", deployment, "messages")
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": str(part.get("text", ""))}
        elif kind == "image_url":
            block = _image(part, deployment)
        else:
            raise _bad(f"content part type {kind!r} is not supported here", deployment, "messages")
        if "cache_control" in part:  # the prompt-caching breakpoint, passed on
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _tool_use(call: Any, deployment: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        raise _bad("a tool call needs a function with a name", deployment, "messages")
    arguments = function.get("arguments") or "{}"
    try:
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        raise _bad("a tool call's arguments are not JSON", deployment, "messages") from None
    if not isinstance(arguments, dict):
        raise _bad("a tool call's arguments are a JSON object", deployment, "messages")
    return {"type": "tool_use", "id": call.get("id"), "name": function["name"], "input": arguments}


def _messages(messages: Any, deployment: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI's messages as Anthropic's (system blocks, turns); consecutive turns of one
    role are merged into one, as Anthropic alternates user and assistant."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", deployment, "messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.extend(_blocks(message.get("content"), deployment))
            continue
        if role == "user":
            blocks = _blocks(message.get("content"), deployment)
            anthropic_role = "user"
        elif role == "assistant":
            blocks = _blocks(message.get("content"), deployment)
            blocks += [_tool_use(c, deployment) for c in message.get("tool_calls") or ()]
            anthropic_role = "assistant"
        elif role == "tool":
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _blocks(message.get("content"), deployment),
            }
            blocks, anthropic_role = [result], "user"
        else:
            raise _bad(f"message role {role!r} is not supported here", deployment, "messages")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": anthropic_role, "content": blocks})
    if not turns:
        raise _bad("messages hold no user or assistant content", deployment, "messages")
    return system, turns


def _tools(body: Body, request: dict[str, Any], deployment: str) -> None:
    tools = body.get("tools")
    if tools:
        translated = []
        for tool in tools:
            function = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(function, dict):
                raise _bad("only function tools are translated for Anthropic", deployment, "tools")
            translated.append(
                {
                    "name": function["name"],
                    "description": function.get("description", ""),
                    "input_schema": function.get("parameters")
                    or {"type": "object", "properties": {}},
                }
            )
        request["tools"] = translated
    choice = body.get("tool_choice")
    anthropic_choice: dict[str, Any] | None
    if choice is None:
        anthropic_choice = None
    elif choice in ("auto", "none"):
        anthropic_choice = {"type": choice}
    elif choice == "required":
        anthropic_choice = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        anthropic_choice = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise _bad(f"tool_choice {choice!r} is not understood", deployment, "tool_choice")
    if body.get("parallel_tool_calls") is False and tools:
        anthropic_choice = anthropic_choice or {"type": "auto"}
        if anthropic_choice["type"] != "none":
            anthropic_choice["disable_parallel_tool_use"] = True
    if anthropic_choice is not None and (tools or anthropic_choice["type"] == "none"):
        request["tool_choice"] = anthropic_choice


def to_anthropic(
    body: Body, model: str, *, max_tokens: int = 4096, deployment: str = "anthropic"
) -> dict[str, Any]:
    """The Messages API request for an OpenAI chat body (``stream`` not set: the caller
    sets it). Raises :class:`UpstreamError` ``bad_request`` for what cannot be said to
    Anthropic (``n`` > 1, a ``response_format`` asking JSON, an unknown role or part)."""
    if int(body.get("n") or 1) != 1:
        raise _bad("Anthropic answers one choice per request (n must be 1)", deployment, "n")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise _bad("response_format is not translated for Anthropic", deployment, "response_format")
    system, turns = _messages(body.get("messages"), deployment)
    request: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": int(
            body.get("max_completion_tokens") or body.get("max_tokens") or max_tokens
        ),
    }
    if system:
        # A plain string when no block carries a cache breakpoint: the common, cheap form.
        if any("cache_control" in b or b["type"] != "text" for b in system):
            request["system"] = system
        else:
            request["system"] = "\n\n".join(b["text"] for b in system)
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("temperature") is not None:
        # OpenAI's range is 0..2, Anthropic's 0..1.
        request["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        request["top_p"] = body["top_p"]
    if body.get("user"):
        request["metadata"] = {"user_id": str(body["user"])}
    _tools(body, request, deployment)
    return request


# --- Anthropic -> OpenAI ---------------------------------------------------------------


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's usage in OpenAI's shape: its ``input_tokens`` leave out the cached
    ones (read or written), OpenAI's ``prompt_tokens`` count them."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = (
        int(usage.get("input_tokens") or 0)
        + cached
        + int(usage.get("cache_creation_input_tokens") or 0)
    )
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})},
    }


def from_anthropic(message: dict[str, Any]) -> Body:
    """A Messages API answer as OpenAI's ``chat.completion``."""
    text = []
    tool_calls = []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(_tool_call(block))
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if tool_calls:
        answer["tool_calls"] = tool_calls
    elif answer["content"] is None:
        answer["content"] = ""
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": answer,
                "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
                "logprobs": None,
            }
        ],
        "usage": _usage(message.get("usage") or {}),
    }


class StreamTranslator:
    """Anthropic's stream events in, OpenAI's ``chat.completion.chunk`` objects out.

    :meth:`feed` takes one event's parsed ``data`` and returns the chunks it makes (often
    one, none for ``ping`` and block ends). :attr:`done` turns true at ``message_stop``;
    an ``error`` event raises :class:`UpstreamError`."""

    def __init__(self, deployment: str, *, include_usage: bool = False) -> None:
        self.deployment = deployment
        self.include_usage = include_usage
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.done = False
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_call index

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def feed(self, event: dict[str, Any], *, streamed: bool = False) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = message.get("id") or ""
            self.model = message.get("model") or ""
            self.usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            if block.get("type") == "tool_use":
                index = self._tools[int(event.get("index", 0))] = len(self._tools)
                call = _tool_call({**block, "input": {}})
                call["function"]["arguments"] = ""
                return [self._chunk({"tool_calls": [{"index": index, **call}]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                tool = self._tools.get(int(event.get("index", 0)))
                if tool is None:
                    raise self._protocol("input_json_delta for a block that is not tool_use")
                arguments = delta.get("partial_json", "")
                return [
                    self._chunk(
                        {"tool_calls": [{"index": tool, "function": {"arguments": arguments}}]}
                    )
                ]
            return []  # thinking and signature deltas: not OpenAI chat content
        if kind == "message_delta":
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                return [self._chunk({}, FINISH_REASONS.get(reason, "stop"))]
            return []
        if kind == "message_stop":
            self.done = True
            if not self.include_usage:
                return []
            last = self._chunk({})
            last["choices"] = []
            last["usage"] = _usage(self.usage)
            return [last]
        if kind == "error":
            error = event.get("error") or {}
            error_type = str(error.get("type") or "api_error")
            raise UpstreamError(
                _ERROR_KINDS.get(error_type, "protocol"),
                f"Anthropic stream error {error_type}: {error.get('message', '')}",
                deployment=self.deployment,
                streamed=streamed,
                body=event,
            )
        return []  # ping, content_block_stop, and event types added later

    def _protocol(self, message: str) -> UpstreamError:
        return UpstreamError("protocol", message, deployment=self.deployment, streamed=True)


# --- the provider ----------------------------------------------------------------------


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _status_error(
    status: int, content: bytes, headers: httpx.Headers, deployment: str
) -> UpstreamError:
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or content[:200].decode(errors="replace"))
    error_type = str(error.get("type") or "api_error")
    text = f"Anthropic answered {status} ({error_type}): {message}"
    if status == 429:
        retry_after = _retry_after(headers.get("retry-after"))
        return UpstreamError(
            "rate_limited", text, deployment=deployment, status=status, retry_after_s=retry_after
        )
    if status == 408:
        return UpstreamError("timeout", text, deployment=deployment, status=status)
    if status >= 500:  # 529 is Anthropic's "overloaded"
        return UpstreamError("server", text, deployment=deployment, status=status)
    openai_error = {"message": message, "type": error_type, "code": error_type, "param": None}
    return UpstreamError(
        "bad_request", text, deployment=deployment, status=status, body={"error": openai_error}
    )


def _transport_error(
    exc: Exception, deployment: str, *, answered: bool, streamed: bool
) -> UpstreamError:
    import httpx

    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        kind: FailureKind = "connect"
    elif isinstance(exc, httpx.TimeoutException | TimeoutError):
        kind = "timeout"
    elif answered:
        kind = "protocol"  # the connection dropped once the answer had begun
    else:
        kind = "connect"  # reset before any answer
    detail = str(exc) or type(exc).__name__
    return UpstreamError(kind, f"Anthropic: {detail}", deployment=deployment, streamed=streamed)


class AnthropicProvider:
    """The Messages API over one pooled ``httpx.AsyncClient`` (see the module's docs)."""

    name = "anthropic"

    def __init__(self, settings: dict[str, Any]) -> None:
        try:
            self.settings = AnthropicSettings(**settings)
        except ValidationError as exc:
            raise ConfigError(f"anthropic provider settings: {exc}", provider="anthropic") from exc
        key = os.environ.get(self.settings.api_key_env)
        if not key:
            raise ConfigError(
                f"the anthropic provider reads its API key from ${self.settings.api_key_env}, "
                "which is not set",
                provider="anthropic",
            )
        self._headers = {
            "x-api-key": key,
            "anthropic-version": self.settings.version,
            "content-type": "application/json",
        }
        if self.settings.beta:
            self._headers["anthropic-beta"] = ",".join(self.settings.beta)
        self._url = self.settings.base_url.rstrip("/") + "/v1/messages"
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"AnthropicProvider(base_url={self.settings.base_url!r})"  # never the key

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            http2 = self.settings.http2
            if http2 is None:
                http2 = importlib.util.find_spec("h2") is not None
            limits = httpx.Limits(
                max_connections=self.settings.max_connections,
                max_keepalive_connections=self.settings.max_connections,
            )
            self._client = httpx.AsyncClient(http2=http2, limits=limits, headers=self._headers)
        return self._client

    def _timeout(self, deployment: Deployment) -> httpx.Timeout:
        import httpx

        connect = min(self.settings.connect_timeout_s, deployment.timeout_s)
        return httpx.Timeout(deployment.timeout_s, connect=connect)

    def _request(self, body: Body, deployment: Deployment) -> dict[str, Any]:
        options = deployment.options
        request = to_anthropic(
            body,
            deployment.model,
            max_tokens=int(options.get("max_tokens") or self.settings.max_tokens),
            deployment=deployment.name,
        )
        request.update(options.get("extra") or {})  # e.g. top_k, thinking
        return request

    async def chat(self, body: Body, deployment: Deployment) -> Body:
        request = self._request(body, deployment)
        client = self._http()
        http_request = client.build_request(
            "POST", self._url, json=request, timeout=self._timeout(deployment)
        )
        answered = False
        try:
            response = await client.send(http_request, stream=True)
            answered = True
            try:
                content = await response.aread()
            finally:
                await response.aclose()
        except Exception as exc:
            if not _is_transport(exc):
                raise
            raise _transport_error(exc, deployment.name, answered=answered, streamed=False) from exc
        if response.status_code != 200:
            raise _status_error(response.status_code, content, response.headers, deployment.name)
        try:
            message = json.loads(content)
        except ValueError:
            message = None
        if not isinstance(message, dict) or message.get("type") != "message":
            raise UpstreamError(
                "protocol",
                f"Anthropic answered 200 with something not a message: {content[:200]!r}",
                deployment=deployment.name,
                status=200,
            )
        return from_anthropic(message)

    async def stream(self, body: Body, deployment: Deployment) -> AsyncIterator[Chunk]:
        request = self._request(body, deployment)
        request["stream"] = True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = StreamTranslator(deployment.name, include_usage=include_usage)
        client = self._http()
        http_request = client.build_request(
            "POST", self._url, json=request, timeout=self._timeout(deployment)
        )
        answered = streamed = False
        response: httpx.Response | None = None
        events: AsyncGenerator[dict[str, Any]] | None = None
        try:
            try:
                # The first event must come within the first-byte timeout (the answer's
                # headers included); every later read within the deployment's timeout.
                async with asyncio.timeout(deployment.first_byte_timeout_s):
                    response = await client.send(http_request, stream=True)
                    answered = True
                    if response.status_code != 200:
                        content = await response.aread()
                        raise _status_error(
                            response.status_code, content, response.headers, deployment.name
                        )
                    events = _events(response.aiter_lines())
                    first = await anext(events, None)
                if first is not None:
                    for data in translator.feed(first):
                        streamed = True
                        yield Chunk(data)
                    async for event in events:
                        for data in translator.feed(event, streamed=streamed):
                            streamed = True
                            yield Chunk(data)
                        if translator.done:
                            break
                if translator.done:
                    return
            except UpstreamError:
                raise
            except _NotJSON as exc:
                raise UpstreamError(
                    "protocol", str(exc), deployment=deployment.name, status=200, streamed=streamed
                ) from None
            except Exception as exc:
                if not _is_transport(exc):
                    raise
                raise _transport_error(
                    exc, deployment.name, answered=answered, streamed=streamed
                ) from exc
            raise UpstreamError(
                "protocol",
                "Anthropic's stream ended before message_stop",
                deployment=deployment.name,
                status=200,
                streamed=streamed,
            )
        finally:
            if events is not None:
                await events.aclose()
            if response is not None:
                await response.aclose()

    async def embeddings(self, body: Body, deployment: Deployment) -> Body:
        raise _bad("Anthropic has no embeddings API", deployment.name, "model")

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _is_transport(exc: Exception) -> bool:
    import httpx

    return isinstance(exc, httpx.TransportError | TimeoutError)


class _NotJSON(ValueError):
    """An event's data that is not JSON."""


async def _events(lines: AsyncIterator[str]) -> AsyncGenerator[dict[str, Any]]:
    """Server-sent events' ``data`` payloads, parsed (Anthropic's ``event:`` names repeat
    the payload's ``type``)."""
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif not line and data:
            payload = "\n".join(data)
            data = []
            try:
                event = json.loads(payload)
            except ValueError:
                raise _NotJSON(
                    f"Anthropic sent an event that is not JSON: {payload[:200]!r}"
                ) from None
            if isinstance(event, dict):
                yield cast(dict[str, Any], event)
