"""OpenAI-compatible upstreams: OpenAI itself, vLLM, Ollama, llama.cpp's server, TGI and
most hosted APIs, over one pool of keep-alive connections per provider entry: the
gateway's own HTTP/1.1 client (:mod:`conveyor.gateway.providers.http1`, a tenth of
httpx's CPU a call), or ``httpx.AsyncClient`` when the entry asks for HTTP/2 or the
environment names a proxy for its URL (``HTTPS_PROXY``...).

The body goes upstream as it came (its ``model`` already the deployment's), with the
deployment's ``options.extra_body`` merged in; the answer comes back as it was sent.
A stream's server-sent events are split here, byte for byte: each ``data:`` payload is
kept as it came (:attr:`Chunk.raw`, written to the client unchanged) and parsed once
(orjson) for usage and accounting. ``[DONE]`` ends the stream; a stream that ends
without it was cut.

Failures are :class:`~conveyor.gateway.types.UpstreamError`\\ s: a connection refused or
reset before an answer is ``connect``; no answer (or no next chunk) in time is
``timeout``; 429 is ``rate_limited`` with its ``Retry-After`` (or ``retry-after-ms``);
408 is ``timeout``; 5xx is ``server``, and so are 401, 403 and 404 (the gateway's own key
or the deployment's model is wrong: another deployment may answer); another 4xx is
``bad_request`` with the upstream's error passed back in OpenAI's shape; an answer that is
not JSON, an ``error`` object inside a stream, or a stream cut short is ``protocol``.

Settings (the provider's entry in the spec, ``kind: openai``)::

    base_url: http://127.0.0.1:8000/v1   # required: the API's root, /v1 included
    api_key_env: OPENAI_API_KEY          # the variable holding the key; null: no key sent
    headers: {}                          # extra headers sent upstream (OpenAI-Organization...)
    connect_timeout_s: 5.0
    max_connections: 100
    http2: false                         # true: HTTP/2 over TLS (httpx), when h2 is installed
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.util
import logging
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.errors import ConfigError
from conveyor.gateway.providers.http1 import BadAnswer, ConnectFailed, Disconnected, Pool
from conveyor.gateway.types import Body, Chunk, Deployment, FailureKind, UpstreamError

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAIProvider", "OpenAISettings", "retry_after_of", "sse_payloads"]

log = logging.getLogger("conveyor.gateway")


class OpenAISettings(BaseModel):
    """The provider's settings, as the spec gives them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(description="The API's root URL, /v1 included.")
    api_key_env: str | None = Field(
        None, description="The environment variable holding the API key (None: no key sent)."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers sent.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Seconds to open a connection.")
    max_connections: int = Field(100, gt=0, description="Connections kept in the pool, at most.")
    http2: bool = Field(False, description="Speak HTTP/2 (over TLS), when h2 is installed.")


def retry_after_of(headers: Any) -> float | None:
    """Seconds an upstream asked to wait: ``retry-after-ms``, or ``retry-after`` in seconds
    or as an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
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


def _error_body(status: int, content: bytes) -> tuple[dict[str, Any], str]:
    """The upstream's error in OpenAI's shape, and its message."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        shaped = {
            "message": message,
            "type": error.get("type") or "invalid_request_error",
            "code": error.get("code"),
            "param": error.get("param"),
        }
    else:
        message = content[:300].decode(errors="replace") or f"HTTP {status}"
        shaped = {"message": message, "type": "invalid_request_error", "code": None, "param": None}
    return {"error": shaped}, message


def _status_error(status: int, content: bytes, headers: Any, deployment: str) -> UpstreamError:
    body, message = _error_body(status, content)
    text = f"{deployment} answered {status}: {message}"
    if status == 429:
        return UpstreamError(
            "rate_limited",
            text,
            deployment=deployment,
            status=status,
            retry_after_s=retry_after_of(headers),
            body=body,
        )
    if status == 408:
        return UpstreamError("timeout", text, deployment=deployment, status=status)
    if status >= 500 or status in (401, 403, 404):
        # The gateway's key, or the deployment's model, is wrong upstream: not the client's
        # request. Another deployment may answer.
        return UpstreamError("server", text, deployment=deployment, status=status)
    return UpstreamError("bad_request", text, deployment=deployment, status=status, body=body)


def _transport_error(
    exc: BaseException, deployment: str, *, answered: bool, streamed: bool
) -> UpstreamError:
    httpx = sys.modules.get("httpx")
    kind: FailureKind
    if isinstance(exc, ConnectFailed) or (
        httpx is not None and isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError)
    ):
        kind = "connect"
    elif isinstance(exc, TimeoutError) or (
        httpx is not None and isinstance(exc, httpx.TimeoutException)
    ):
        kind = "timeout"
    elif isinstance(exc, Disconnected) and not exc.answered and not streamed:
        kind = "connect"  # reset before any answer
    elif answered:
        kind = "protocol"  # the connection dropped once the answer had begun
    else:
        kind = "connect"  # reset before any answer
    detail = str(exc) or type(exc).__name__
    return UpstreamError(
        kind, f"{deployment}: {type(exc).__name__}: {detail}", deployment=deployment,
        streamed=streamed,
    )  # fmt: skip


def _is_transport(exc: BaseException) -> bool:
    if isinstance(exc, ConnectFailed | Disconnected | BadAnswer | TimeoutError):
        return True
    httpx = sys.modules.get("httpx")  # not imported: not one of its errors
    return httpx is not None and isinstance(exc, httpx.TransportError)


async def sse_payloads(pieces: AsyncIterator[bytes]) -> AsyncGenerator[bytes]:
    """The ``data`` payloads of a server-sent event stream, as bytes, one per event (lines
    of one event joined by newlines; comments and other fields skipped)."""
    pending = b""
    data: list[bytes] = []
    async for piece in pieces:
        pending = pending + piece if pending else piece
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            line = pending[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield data[0] if len(data) == 1 else b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
        pending = pending[start:]
    if data:  # the last event, with no blank line after it
        yield data[0] if len(data) == 1 else b"\n".join(data)


class OpenAIProvider:
    """An OpenAI-compatible API over one connection pool (see the module)."""

    name = "openai"

    def __init__(self, settings: dict[str, Any]) -> None:
        try:
            self.settings = OpenAISettings(**settings)
        except ValidationError as exc:
            raise ConfigError(f"openai provider settings: {exc}", provider="openai") from exc
        headers = {"content-type": "application/json", **self.settings.headers}
        env = self.settings.api_key_env
        if env is not None:
            key = os.environ.get(env)
            if not key:
                raise ConfigError(
                    f"the openai provider at {self.settings.base_url} reads its API key from "
                    f"${env}, which is not set",
                    provider="openai",
                )
            headers["authorization"] = f"Bearer {key}"
        self._headers = headers
        self._base = self.settings.base_url.rstrip("/")
        #: HTTP/2 or a proxy: httpx; else the gateway's own HTTP/1.1 pool (http1.py: a
        #: tenth of httpx's CPU a call).
        self._wire = not self.settings.http2 and not _proxied(self._base)
        self._pool: Pool | None = None
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"OpenAIProvider(base_url={self.settings.base_url!r})"  # never the key

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            http2 = self.settings.http2
            if http2 and importlib.util.find_spec("h2") is None:
                log.warning("%r: http2 asked but the h2 package is not installed: HTTP/1.1", self)
                http2 = False
            limits = httpx.Limits(
                max_connections=self.settings.max_connections,
                max_keepalive_connections=self.settings.max_connections,
            )
            self._client = httpx.AsyncClient(http2=http2, limits=limits, headers=self._headers)
        return self._client

    async def _send(
        self, path: str, body: Body | None, deployment: Deployment, method: str = "POST"
    ) -> _Answer:
        """The request sent; its answer once its headers came (its body still to read).
        ``body`` None: a request without one (``GET``)."""
        options = deployment.options
        headers = options.get("headers") or None
        if body is None:
            content = b""
        else:
            extra = options.get("extra_body")
            if extra:
                body = {**body, **extra}
            content = orjson.dumps(body)
        if self._wire:
            pool = self._pool
            if pool is None:
                pool = self._pool = Pool(
                    self._base,
                    headers=self._headers,
                    max_connections=self.settings.max_connections,
                    connect_timeout_s=self.settings.connect_timeout_s,
                )
            return await pool.send(
                path, content, headers=headers, timeout=deployment.timeout_s, method=method
            )
        import httpx

        connect = min(self.settings.connect_timeout_s, deployment.timeout_s)
        client = self._http()
        request = client.build_request(
            method,
            self._base + path,
            content=content if body is not None else None,
            headers=headers,
            timeout=httpx.Timeout(deployment.timeout_s, connect=connect),
        )
        return _HttpxAnswer(await client.send(request, stream=True))

    async def _call(
        self, path: str, body: Body | None, deployment: Deployment, method: str = "POST"
    ) -> Body:
        """One request answered in full, JSON object expected."""
        answered = False
        try:
            answer = await self._send(path, body, deployment, method)
            answered = True
            try:
                content = await answer.read()
            finally:
                await answer.aclose()
        except Exception as exc:
            if not _is_transport(exc):
                raise
            raise _transport_error(exc, deployment.name, answered=answered, streamed=False) from exc
        if answer.status != 200:
            raise _status_error(answer.status, content, answer.headers, deployment.name)
        try:
            answer_body = orjson.loads(content)
        except orjson.JSONDecodeError:
            answer_body = None
        if not isinstance(answer_body, dict):
            raise UpstreamError(
                "protocol",
                f"{deployment.name} answered 200 with something not a JSON object: "
                f"{content[:200]!r}",
                deployment=deployment.name,
                status=200,
            )
        return answer_body

    async def chat(self, body: Body, deployment: Deployment) -> Body:
        answer = await self._call("/chat/completions", body, deployment)
        if "choices" not in answer:
            raise UpstreamError(
                "protocol",
                f"{deployment.name} answered a chat completion with no choices",
                deployment=deployment.name,
                status=200,
            )
        return answer

    async def models(self, deployment: Deployment) -> Body:
        """The upstream's model list (``GET /models``): the cheapest sign that it is up,
        for health probes (:mod:`conveyor.gateway.probes`)."""
        return await self._call("/models", None, deployment, "GET")

    async def embeddings(self, body: Body, deployment: Deployment) -> Body:
        answer = await self._call("/embeddings", body, deployment)
        if not isinstance(answer.get("data"), list):
            raise UpstreamError(
                "protocol",
                f"{deployment.name} answered embeddings with no data list",
                deployment=deployment.name,
                status=200,
            )
        return answer

    async def stream(self, body: Body, deployment: Deployment) -> AsyncIterator[Chunk]:
        if not body.get("stream"):
            body = {**body, "stream": True}
        name = deployment.name
        answered = streamed = False
        answer: _Answer | None = None
        payloads: AsyncGenerator[bytes] | None = None
        first_byte = deployment.first_byte_timeout_s or deployment.timeout_s
        try:
            try:
                # The answer's headers and first event must come within the first-byte
                # timeout; every later read within the deployment's timeout.
                async with asyncio.timeout(first_byte):
                    answer = await self._send("/chat/completions", body, deployment)
                    answered = True
                    if answer.status != 200:
                        content = await answer.read()
                        raise _status_error(answer.status, content, answer.headers, name)
                    payloads = sse_payloads(answer.pieces())
                    raw = await anext(payloads, None)
                while raw is not None:
                    if raw == b"[DONE]":
                        assert answer is not None
                        answer.finish()  # the connection goes back once the answer ends
                        return
                    try:
                        data = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        raise UpstreamError(
                            "protocol",
                            f"{name} streamed something not JSON: {raw[:200]!r}",
                            deployment=name,
                            status=200,
                            streamed=streamed,
                        ) from None
                    if not isinstance(data, dict):
                        raise UpstreamError(
                            "protocol",
                            f"{name} streamed something not a chunk: {raw[:200]!r}",
                            deployment=name,
                            status=200,
                            streamed=streamed,
                        )
                    error = data.get("error")
                    if error is not None:
                        message = error.get("message") if isinstance(error, dict) else error
                        raise UpstreamError(
                            "protocol" if streamed else "server",
                            f"{name} sent an error in its stream: {message}",
                            deployment=name,
                            status=200,
                            streamed=streamed,
                            body={"error": error} if isinstance(error, dict) else None,
                        )
                    streamed = True
                    yield Chunk(data, raw)
                    raw = await anext(payloads, None)
            except UpstreamError:
                raise
            except Exception as exc:
                if not _is_transport(exc):
                    raise
                raise _transport_error(exc, name, answered=answered, streamed=streamed) from exc
            raise UpstreamError(
                "protocol",
                f"{name}'s stream ended before [DONE]",
                deployment=name,
                status=200,
                streamed=streamed,
            )
        finally:
            if payloads is not None:
                await payloads.aclose()
            if answer is not None:
                await answer.aclose()

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


class _Answer(Protocol):
    """An upstream's answer once its headers came: the pool's, or httpx's wrapped."""

    status: int

    @property
    def headers(self) -> Any: ...

    async def read(self) -> bytes: ...

    def pieces(self) -> AsyncIterator[bytes]: ...

    def finish(self) -> None: ...

    async def aclose(self) -> None: ...


class _HttpxAnswer:
    """httpx's streamed response, as an :class:`_Answer`."""

    __slots__ = ("_response", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers

    async def read(self) -> bytes:
        return await self._response.aread()

    def pieces(self) -> AsyncIterator[bytes]:
        return self._response.aiter_raw()

    def finish(self) -> None:
        pass  # closed by aclose (httpx keeps the connection if the answer was read whole)

    async def aclose(self) -> None:
        await self._response.aclose()


def _proxied(url: str) -> bool:
    """Whether the environment sends ``url`` through a proxy (HTTPS_PROXY...): httpx then."""
    import urllib.request

    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")
