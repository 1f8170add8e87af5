"""The gateway's OpenAI-compatible API on the server app, under ``gateway.prefix``
(``/llm/v1`` by default: ``/v1`` is the model server's)::

    POST /llm/v1/chat/completions   OpenAI's chat body; "stream": true answers server-sent events
    POST /llm/v1/embeddings
    GET  /llm/v1/models             the aliases and deployments a request may name
    GET  /llm/v1/models/{model}

so the official client works as it is::

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/llm/v1", api_key="cvy_...")

Calling needs the action ``llm.call`` (role predictor and up), with the server's keys and
rate limits. The routes are open to the pipeline and check the key themselves, the same
rule (:meth:`conveyor.governance.access.Access.authorize_async`) and the same rate
limiter, so that every error, a missing key's 401 included, is in OpenAI's shape::

    {"error": {"message": "...", "type": "invalid_request_error", "code": "invalid_input",
               "param": "messages"}}

with 400 (a malformed body), 401 (no key, a wrong or revoked one), 403 (a role below
predictor), 404 (an unknown model), 413 (a body over the server's limit), 429 (the key's
rate limit, or every deployment rate-limited upstream: ``Retry-After``), 502 (the
upstreams failed), 503 (every deployment cooling down: ``Retry-After``) and 504 (timeout).
An upstream's own 4xx answer to the request is passed back with its status and error.

The body is passed upstream as it came (tools, ``response_format``, ``n``, ``stop``,
``max_tokens``/``max_completion_tokens``, ``stream_options``...), its ``model`` replaced
by the deployment's. A stream is written chunk by chunk as the upstream sent each one
(no re-serialization, no buffering), then ``data: [DONE]``; a failure after the first
chunk ends it with an error event (``data: {"error": {...}}``, which the openai client
raises as ``APIError``), and a client that goes away closes the upstream stream at once.
Answers carry ``x-conveyor-deployment`` (who answered) and ``x-conveyor-fallbacks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from conveyor.errors import BudgetExceededError, ConveyorError, InvalidInputError, NotFoundError
from conveyor.gateway.events import LLM_CALL, GatewayMetrics
from conveyor.gateway.prompts import EXTENSION, Prompts, prefix_of
from conveyor.gateway.router import CallRecord, Router
from conveyor.gateway.settings import gateway_of
from conveyor.gateway.stages import build as build_stages
from conveyor.gateway.turn import Turn, chain
from conveyor.gateway.types import Chunk, UpstreamError, Usage
from conveyor.web.routing import Route

if TYPE_CHECKING:
    from conveyor.gateway.turn import Endpoint
    from conveyor.governance.access import Caller
    from conveyor.web.app import AppContext, Contribution
    from conveyor.web.pipeline import Call

__all__ = ["ACTION", "openai_error", "routes"]

log = logging.getLogger("conveyor.gateway")

#: The action calling the gateway needs.
ACTION = "llm.call"

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}

_CHAT_BODY = {
    "type": "object",
    "required": ["model", "messages"],
    "description": "OpenAI's chat completion body; fields not listed are passed upstream.",
    "additionalProperties": True,
    "properties": {
        "model": {"type": "string", "description": "A model alias or a deployment."},
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object"},
        "n": {"type": "integer", "minimum": 1},
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array"}]},
        "tools": {"type": "array"},
        "response_format": {"type": "object"},
        "user": {"type": "string"},
    },
}
_EMBEDDINGS_BODY = {
    "type": "object",
    "required": ["model", "input"],
    "additionalProperties": True,
    "properties": {
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string"}, {"type": "array"}]},
    },
}


def openai_error(
    status: int,
    message: str,
    code: str | None,
    *,
    param: str | None = None,
    error_type: str | None = None,
    retry_after: float | None = None,
) -> Response:
    """An error answer in OpenAI's shape."""
    if error_type is None:
        error_type = _TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
    body = {"error": {"message": message, "type": error_type, "code": code, "param": param}}
    response = Response(orjson.dumps(body), status, media_type="application/json")
    if retry_after is not None:
        response.raw_headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    if status == 401:
        response.raw_headers.append((b"www-authenticate", b'Bearer realm="conveyor"'))
    return response


def _from_conveyor(exc: ConveyorError) -> Response:
    from conveyor.web.errors import status_of

    status = status_of(exc)
    if status == 422:
        status = 400  # OpenAI answers 400 to a request it cannot take
    retry = getattr(exc, "retry_after", None) or exc.context.get("retry_after")
    if status == 429 and not isinstance(retry, int | float):
        retry = 1.0
    param = exc.context.get("field")
    response = openai_error(
        status,
        exc.message,
        exc.code,
        param=param if isinstance(param, str) else None,
        retry_after=retry if isinstance(retry, int | float) else None,
    )
    if isinstance(exc, BudgetExceededError):  # which budget, its limit and its reset
        body = orjson.loads(response.body)
        body["error"]["budget"] = {k: v for k, v in exc.context.items() if k != "retry_after"}
        response.body = orjson.dumps(body)
        response.headers["content-length"] = str(len(response.body))
    return response


def _from_upstream(exc: UpstreamError, call: CallRecord) -> tuple[Response, int]:
    if exc.kind == "bad_request":
        status = exc.status if exc.status in (400, 404, 409, 413, 415) else 400
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        if isinstance(error, dict):
            body = {
                "error": {
                    "message": str(error.get("message") or exc.message),
                    "type": error.get("type") or "invalid_request_error",
                    "code": error.get("code"),
                    "param": error.get("param"),
                }
            }
            return Response(orjson.dumps(body), status, media_type="application/json"), status
        return openai_error(status, exc.message, "upstream_bad_request"), status
    if exc.kind == "rate_limited":
        code = "upstream_rate_limited" if call.attempts else "no_deployment_available"
        return openai_error(429, exc.message, code, retry_after=exc.retry_after_s or 1.0), 429
    if not call.attempts:  # every deployment skipped: breakers open
        return openai_error(
            503, exc.message, "no_deployment_available", retry_after=exc.retry_after_s or 1.0
        ), 503
    if exc.kind == "timeout":
        return openai_error(504, exc.message, "upstream_timeout"), 504
    return openai_error(502, exc.message, f"upstream_{exc.kind}"), 502


def _error_event(exc: BaseException) -> bytes:
    if isinstance(exc, UpstreamError):
        error = {
            "message": f"the upstream stream failed ({exc.kind}): {exc.message}",
            "type": "server_error",
            "code": f"upstream_{exc.kind}",
            "param": None,
        }
    elif isinstance(exc, ConveyorError):  # a guardrail stopped the stream
        error = {
            "message": exc.message,
            "type": "invalid_request_error",
            "code": exc.code,
            "param": None,
        }
    else:
        error = {
            "message": "the gateway failed; see its log",
            "type": "server_error",
            "code": "internal",
            "param": None,
        }
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def _bad(message: str, param: str | None) -> InvalidInputError:
    return InvalidInputError(message, field=param or "body")


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not JSON: {exc}", None) from None
    if not isinstance(body, dict):
        raise _bad("the body is a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required: a model alias or a deployment (GET models)", "model")
    return body


def _positive_int(body: dict[str, Any], name: str, most: int | None = None) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _bad(f"'{name}' is a whole number of at least 1, got {value!r}", name)
    if most is not None and value > most:
        raise _bad(f"'{name}' is at most {most}, got {value!r}", name)


def _check_chat(body: dict[str, Any]) -> bool:
    """Check the fields the gateway acts on; whether the request streams."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' is a non-empty list of messages", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad(f"messages[{i}] is an object with a 'role'", f"messages[{i}]")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _bad(f"'stream' is true or false, got {stream!r}", "stream")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise _bad("'stream_options' is only allowed with 'stream': true", "stream_options")
        if not isinstance(options, dict):
            raise _bad("'stream_options' is an object", "stream_options")
    _positive_int(body, "n", 128)
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str | list):
        raise _bad("'stop' is a string or a list of strings", "stop")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("'user' is a string", "user")
    return bool(stream)


def _check_embeddings(body: dict[str, Any]) -> None:
    given = body.get("input")
    if isinstance(given, str):
        return
    if not isinstance(given, list) or not given:
        raise _bad("'input' is a string or a non-empty list", "input")


class Gateway:
    """The API's handlers over one router (see the module)."""

    def __init__(self, context: AppContext) -> None:
        from conveyor.governance.access import Access
        from conveyor.web.pipeline import RateLimit

        project = context.project
        self.project = project
        self.spec = gateway_of(project.spec)
        self.metrics = GatewayMetrics(context.metrics.registry)
        self.router = Router(self.spec, on_probe=self.metrics.probed)
        self.prompts = Prompts(self.spec.prompts)
        self.access = Access.for_server(project.keys, getattr(context.state, "auth", "required"))
        deps = context.dependencies
        self._run: Any = None
        self._stale_s = 0.0
        if deps is not None:
            limits = deps.limits

            def run(fn: Callable[..., Any], *args: Any) -> Any:
                return deps.call("store", limits.store_timeout_s, fn, *args)

            self._run, self._stale_s = run, limits.stale_keys_s
        self.limiter = RateLimit(project.backend("ratelimit"), deps)
        stages = build_stages(context, self.spec)
        #: Every stage once (a stage may serve both endpoints): what shutdown drains.
        self.stages = list({id(s): s for s in stages["chat"] + stages["embeddings"]}.values())
        self._chat = chain(stages["chat"], self._route_chat)
        self._embeddings = chain(stages["embeddings"], self._route_embeddings)

    async def poll_routes(self) -> None:
        """Route by the spec with the store's routes over it, followed while serving
        (:func:`conveyor.gateway.routes_store.follow`)."""
        from conveyor.gateway.routes_store import follow

        await follow(self.project, self.spec, self.router.update)

    # -- the gate ---------------------------------------------------------------------

    async def _gate(self, call: Call) -> None:
        """The caller, allowed ``llm.call``, and one token of their key's rate limit."""
        call.caller = await self.access.authorize_async(
            call.token, ACTION, run=self._run, stale_s=self._stale_s
        )
        await self.limiter(call, _passed)

    # -- handlers ---------------------------------------------------------------------

    def _turn(self, call: Call, endpoint: Endpoint, body: dict[str, Any], stream: bool) -> Turn:
        caller: Caller | None = call.caller
        user = body.get("user")
        headers = _labels(call.scope["headers"])
        key = caller.key if caller is not None else None
        team = headers.get("x-conveyor-team")
        conversation = headers.get("x-conveyor-conversation")
        return Turn(
            call,
            endpoint,
            body,
            CallRecord(
                body["model"],
                started=call.started,
                team=team,
                tier=headers.get("x-conveyor-tier"),
                key=key.name if key is not None else None,
                role=key.role if key is not None else None,
                conversation=conversation,
            ),
            stream=stream,
            caller=caller,
            key=caller.key.name if caller is not None and caller.key is not None else None,
            user=user if isinstance(user, str) else headers.get("x-conveyor-user"),
            team=team,
            conversation=conversation,
        )

    async def chat(self, call: Call) -> Response:
        turn: Turn | None = None
        try:
            await self._gate(call)
            body = _parse(await call.body())
            template = self.prompts.render(body) if EXTENSION in body else None
            stream = _check_chat(body)
            turn = self._turn(call, "chat", body, stream)
            if template is not None:
                turn.event["prompt"] = template
            if not self.router.known(turn.record.model):
                self.router.plan(turn.record.model)  # raises NotFoundError naming the known ones
            outcome = await self._chat(turn)
            if isinstance(outcome, Response):
                self._finish(turn, outcome.status_code, None)
                return outcome
            if stream:
                return await self._stream(turn, outcome)
        except UpstreamError as exc:
            assert turn is not None
            response, status = _from_upstream(exc, turn.record)
            self._finish(turn, status, exc.message)
            return response
        except ClientDisconnect:
            return Response(b"", 499)
        except ConveyorError as exc:
            if turn is not None:
                self._finish(turn, _from_conveyor(exc).status_code, exc.message)
            return self._refused(exc)
        turn.usage = Usage.from_openai(outcome.get("usage"))
        return self._json(outcome, turn)  # its llm.call is recorded once it is sent

    async def embeddings(self, call: Call) -> Response:
        turn: Turn | None = None
        try:
            await self._gate(call)
            body = _parse(await call.body())
            _check_embeddings(body)
            turn = self._turn(call, "embeddings", body, False)
            outcome = await self._embeddings(turn)
            if isinstance(outcome, Response):
                self._finish(turn, outcome.status_code, None)
                return outcome
        except UpstreamError as exc:
            assert turn is not None
            response, status = _from_upstream(exc, turn.record)
            self._finish(turn, status, exc.message)
            return response
        except ClientDisconnect:
            return Response(b"", 499)
        except ConveyorError as exc:
            if turn is not None:
                self._finish(turn, _from_conveyor(exc).status_code, exc.message)
            return self._refused(exc)
        turn.usage = Usage.from_openai(outcome.get("usage"))
        return self._json(outcome, turn)  # its llm.call is recorded once it is sent

    # -- the innermost stage: the router ----------------------------------------------

    async def _route_chat(self, turn: Turn) -> Any:
        if turn.stream:
            return _observed(turn, self.router.stream(turn.body, turn.record))
        return await self.router.chat(turn.body, turn.record)

    async def _route_embeddings(self, turn: Turn) -> Any:
        return await self.router.embeddings(turn.body, turn.record)

    async def models(self, call: Call) -> Response:
        try:
            await self._gate(call)
        except ConveyorError as exc:
            return self._refused(exc)
        return Response(
            orjson.dumps({"object": "list", "data": self.router.models()}),
            media_type="application/json",
        )

    async def model(self, call: Call) -> Response:
        try:
            await self._gate(call)
            name = call.params["model"]
            for found in self.router.models():
                if found["id"] == name:
                    return Response(orjson.dumps(found), media_type="application/json")
            self.router.plan(name)  # raises NotFoundError naming the known ones
            raise NotFoundError(f"the model {name!r} does not exist", model=name)
        except ConveyorError as exc:
            return self._refused(exc)

    # -- answers ----------------------------------------------------------------------

    def _refused(self, exc: ConveyorError) -> Response:
        response = _from_conveyor(exc)
        if isinstance(exc, NotFoundError) and exc.context.get("model") is not None:
            response = openai_error(404, exc.message, "model_not_found", param="model")
        return response

    @staticmethod
    def _headers(turn: Turn) -> list[tuple[bytes, bytes]]:
        record = turn.record
        headers = [
            (b"x-conveyor-deployment", (record.deployment or "").encode()),
            (b"x-conveyor-fallbacks", str(record.fallbacks).encode()),
        ]
        if "cache" in turn.event:  # the cache stage looked the request up
            headers.append((b"x-conveyor-cache", b"hit" if turn.event["cache"] else b"miss"))
        if turn.event.get("review"):  # a guardrail held the call for review
            headers.append((b"x-conveyor-review", turn.event["review"].encode()))
        return headers

    def _json(self, answer: dict[str, Any], turn: Turn) -> Response:
        return _Answered(self, turn, orjson.dumps(answer))

    async def _stream(self, turn: Turn, chunks: AsyncIterator[Chunk]) -> Response:
        """The stream's answer, once its first chunk came (a failure before it is an
        ordinary error answer: the router may still have fallen back)."""
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await _close(chunks)
            raise
        return _EventStream(self, turn, first, chunks)

    def _finish(
        self,
        turn: Turn,
        http_status: int,
        error: str | None,
        *,
        status: str | None = None,
        first_sent: float | None = None,
    ) -> None:
        """The ``llm.call`` event and the metrics of one call (never raises)."""
        try:
            call, record, usage = turn.call, turn.record, turn.usage
            latency_ms = (time.perf_counter() - call.started) * 1000.0
            payload = {
                "endpoint": turn.endpoint,
                "key": turn.key,
                "user": turn.user,
                "team": turn.team,
                "conversation": turn.conversation,
                "model": record.model,
                "deployment": record.deployment,
                "provider": record.provider,
                "upstream_model": record.upstream_model,
                "assigned": record.assigned,
                "route_rule": record.rule,
                "complexity": record.complexity,
                "complexity_score": record.complexity_score,
                "failures": record.failures,
                "fallbacks": record.fallbacks,
                "attempts": record.attempts,
                "stream": turn.stream,
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else turn.chunks_with_text,
                "cached_tokens": usage.cached_tokens if usage else 0,
                "usage_reported": usage is not None,
                "ttft_ms": None
                if first_sent is None
                else round((first_sent - call.started) * 1000.0, 3),
                "latency_ms": round(latency_ms, 3),
                "status": status or ("ok" if http_status == 200 else "error"),
                "http_status": http_status,
                "error": error,
                "cost_usd": None,
                "cache": None,
                "cache_similarity": None,
                "guardrails": [],
                "prompt": None,
                "prefix": None,
                "prefix_tokens": 0,
                **turn.event,
            }
            if turn.endpoint == "chat":  # what a provider's prompt cache can reuse
                payload["prefix"], payload["prefix_tokens"] = prefix_of(turn.body)
            self.metrics.observe(payload)
            self.project.events.record(
                LLM_CALL,
                subject=record.model,
                payload=payload,
                request_id=call.request_id,
                actor=call.actor,
            )
        except Exception:  # telemetry never fails a call
            log.exception("recording an llm.call event failed")


_LABELS = (b"x-conveyor-user", b"x-conveyor-team", b"x-conveyor-conversation", b"x-conveyor-tier")


def _labels(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's ``x-conveyor-user|team|conversation|tier`` headers."""
    return {name.decode(): value.decode("latin-1") for name, value in raw if name in _LABELS}


async def _observed(turn: Turn, chunks: AsyncGenerator[Chunk]) -> AsyncGenerator[Chunk]:
    """The router's stream, noting its usage and its chunks with text on the turn."""
    try:
        async for chunk in chunks:
            data = chunk.data
            if "usage" in data:
                turn.usage = Usage.from_openai(data["usage"]) or turn.usage
            if data.get("choices"):
                turn.chunks_with_text += 1
            yield chunk
    finally:
        await chunks.aclose()


async def _close(chunks: AsyncIterator[Chunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def _passed(call: Call) -> Response:
    return _PASSED


_PASSED = Response(b"")


async def _disconnected(receive: Any) -> None:
    """Returns when the client has gone away (the request's body was read before)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _Answered(Response):
    """An answer (not streamed) whose ``llm.call`` event and metrics are recorded once it
    is sent: the caller does not wait for them (about a tenth of the gateway's own time)."""

    def __init__(self, gateway: Gateway, turn: Turn, body: bytes) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            *gateway._headers(turn),
        ]
        self._gateway = gateway
        self._turn = turn

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.body})
        finally:
            self._gateway._finish(self._turn, 200, None)


class _EventStream(Response):
    """A stream's answer: each chunk written as it comes, ``[DONE]`` or an error event at
    the end; a client going away cancels the pump, which closes the stream (each stage's,
    then the upstream's)."""

    def __init__(
        self, gateway: Gateway, turn: Turn, first: Chunk | None, chunks: AsyncIterator[Chunk]
    ) -> None:
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *gateway._headers(turn),
        ]
        self._gateway = gateway
        self._turn = turn
        self._first = first
        self._chunks = chunks
        self._first_sent: float | None = None
        self._error: str | None = None
        self._status = "ok"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        # The pump runs in this task (the first chunk goes out at once); a watcher task
        # cancels it when the client goes away, which closes the stream (each stage's,
        # then the upstream's).
        task = asyncio.current_task()
        assert task is not None
        state = {"pumping": True, "gone": False}

        def went_away(watch: asyncio.Future[None]) -> None:
            if state["pumping"] and not watch.cancelled() and watch.exception() is None:
                state["gone"] = True
                task.cancel()

        watch: asyncio.Future[None] | None = None
        try:
            chunk = self._first
            if chunk is not None:  # before the watcher: nothing delays the first chunk
                try:
                    await self._send(send, chunk)
                except BaseException:
                    await _close(self._chunks)
                    raise
                self._first_sent = time.perf_counter()
            watch = asyncio.ensure_future(_disconnected(receive))
            watch.add_done_callback(went_away)
            await self._pump(send, chunk is not None)
        except asyncio.CancelledError:
            if not state["gone"]:
                raise  # the server is stopping
            task.uncancel()
            self._status = "cancelled"
            self._error = "the client went away"
        finally:
            state["pumping"] = False
            if watch is not None:
                watch.cancel()
            self._gateway._finish(
                self._turn,
                200,
                self._error,
                status=self._status,
                first_sent=self._first_sent,
            )

    @staticmethod
    async def _send(send: Any, chunk: Chunk) -> None:
        raw = chunk.raw if chunk.raw is not None else orjson.dumps(chunk.data)
        await send(
            {"type": "http.response.body", "body": b"data: " + raw + b"\n\n", "more_body": True}
        )

    async def _pump(self, send: Any, more: bool) -> None:
        chunks = self._chunks
        try:
            while more:
                chunk = await anext(chunks, None)
                if chunk is None:
                    break
                await self._send(send, chunk)
                if self._first_sent is None:
                    self._first_sent = time.perf_counter()
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        except (UpstreamError, ConveyorError) as exc:
            self._status, self._error = "error", exc.message
            await send({"type": "http.response.body", "body": _error_event(exc)})
        except Exception as exc:
            log.exception("a gateway stream failed")
            self._status, self._error = "error", f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": _error_event(exc)})
        finally:
            await _close(chunks)


def routes(context: AppContext) -> Contribution:
    """The OpenAI-compatible routes under ``gateway.prefix``.

    The gateway (its router, stages, limiter and metrics) is built with the app when the
    spec names deployments. A spec that names none (a server of models only) cannot route
    a call anywhere, a stored route included (each is checked against the spec's
    deployments): its gateway is built at the first call of these routes instead, which
    answers as before (no model of that name), and keeps it out of the start-up.
    """
    from conveyor.web.app import Contribution
    from conveyor.web.lazy import Lazy

    spec = gateway_of(context.project.spec)
    prefix = spec.prefix
    poller: list[asyncio.Task[None]] = []
    started = False

    def start(gateway: Gateway) -> None:
        from conveyor.gateway.tracing import tracer

        gateway.router.tracer = tracer()  # None when the process has no tracing
        poller.append(asyncio.ensure_future(gateway.poll_routes()))

    def build() -> Gateway:
        gateway = Gateway(context)
        if started:  # built by a call, after the app started: its route poller starts now
            start(gateway)
        return gateway

    lazy: Lazy[Gateway] = Lazy(build)
    if spec.deployments:
        lazy.get()

    async def startup() -> None:
        nonlocal started
        started = True
        if lazy.built is not None:
            start(lazy.built)

    async def shutdown() -> None:
        for task in poller:
            task.cancel()
        await asyncio.gather(*poller, return_exceptions=True)
        gateway = lazy.built
        if gateway is None:
            return
        for stage in gateway.stages:  # work a stage does after the answer (settlements)
            drain = getattr(stage, "drain", None)
            if drain is not None:
                await drain()
        await gateway.router.aclose()

    def forward(handler: str) -> Callable[[Call], Awaitable[Response]]:
        """The route's handler: the gateway's method of that name, built on first need."""

        async def call_gateway(call: Call) -> Response:
            answer: Response = await getattr(lazy.get(), handler)(call)
            return answer

        return call_gateway

    table = [
        Route(
            "POST",
            f"{prefix}/chat/completions",
            forward("chat"),
            None,  # llm.call, checked by the handler: its errors are OpenAI-shaped
            "An OpenAI chat completion through the gateway (stream: server-sent events)",
            body=_CHAT_BODY,
            tags=("llm",),
            errors=(400, 401, 403, 404, 413, 429, 502, 503, 504),
        ),
        Route(
            "POST",
            f"{prefix}/embeddings",
            forward("embeddings"),
            None,  # llm.call, checked by the handler
            "OpenAI embeddings through the gateway",
            body=_EMBEDDINGS_BODY,
            tags=("llm",),
            errors=(400, 401, 403, 404, 413, 429, 502, 503, 504),
        ),
        Route(
            "GET",
            f"{prefix}/models",
            forward("models"),
            None,  # llm.call, checked by the handler
            "The model aliases and deployments of the gateway",
            tags=("llm",),
            errors=(401, 403),
        ),
        Route(
            "GET",
            f"{prefix}/models/{{model}}",
            forward("model"),
            None,  # llm.call, checked by the handler
            "One model alias or deployment of the gateway",
            tags=("llm",),
            errors=(401, 403, 404),
        ),
    ]
    from conveyor.gateway.quality_http import quality_routes
    from conveyor.gateway.review_http import review_routes
    from conveyor.gateway.routes_http import route_routes

    table.extend(quality_routes(context))
    table.extend(review_routes(context))
    table.extend(route_routes(context, spec))
    return Contribution(table, startup=startup, shutdown=shutdown)
