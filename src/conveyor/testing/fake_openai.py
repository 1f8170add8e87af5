"""A fake OpenAI-compatible upstream, for tests and the quickstart: deterministic answers,
streamed or not, embeddings, and failures on command.

::

    with serve_fake_openai() as fake:            # uvicorn in a thread, on a free port
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-fake")
        fake.fail(500)                           # the next request: a 500
        fake.fail(429, retry_after=2)            # then a 429 with Retry-After: 2
        fake.fail("reset", model="gpt-a", times=None)   # every request for gpt-a: a reset
        fake.fail("cut", after_chunks=3)         # a stream dropped after 3 chunks
        fake.requests[-1]                        # the last request's JSON body

The answer to a chat request is ``"echo: "`` and the last user text; a word is a token.
``max_tokens`` (or ``max_completion_tokens``) cuts it (``finish_reason: length``), a
``stop`` string ends it before the string; ``n`` gives as many identical choices; with
``tools`` (and ``tool_choice`` not ``none``) and a last message that is not a tool
result, the answer calls the tool ``tool_choice`` names, else the first, with
``{"query": <the last user text>}``; ``response_format`` json_object or json_schema
makes the content ``{"echo": <text>}``. The answer's ``model`` is the model asked.
Usage counts words; a system prompt seen before is counted as cached
(``prompt_tokens_details.cached_tokens``). A stream sends the role, then one chunk per
word, then the finish reason, then (``stream_options.include_usage``) the usage chunk
with ``choices: []``, then ``data: [DONE]``. Embeddings are unit vectors drawn from the
text's sha256 (``dimensions``, default 8; ``encoding_format: base64`` as OpenAI does).
With ``api_key`` set, a request without ``Authorization: Bearer <api_key>`` gets 401.

Failures (:meth:`FakeOpenAI.fail`, or ``POST /_fake/fail`` with the same arguments as
JSON, or a request's ``x-fake-fail`` header: ``500``, ``429;retry_after=2``,
``cut;after_chunks=3``): an HTTP status with OpenAI's error body (429 with
``retry-after``); ``"reset"`` (the connection reset before any answer); ``"cut"`` (the
connection dropped after ``after_chunks`` chunks of a stream, or before the body of an
answer not streamed); ``"garbage"`` (a 200 that is not JSON, or mid-stream after
``after_chunks`` chunks); ``"error_event"`` (a stream that sends an error object after
``after_chunks`` chunks); ``0`` (no failure: only ``delay_s``). ``delay_s`` delays the
answer; ``chunk_delay_s`` (an attribute) paces every stream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeOpenAI", "StreamRecord", "serve_fake_openai"]

_KINDS = ("reset", "cut", "garbage", "error_event")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}
_CREATED = 1_700_000_000


@dataclass(slots=True)
class _Failure:
    what: int | str
    retry_after: float | None = None
    after_chunks: int = 0
    delay_s: float = 0.0
    model: str | None = None
    times: int | None = 1  # None: until reset


@dataclass(slots=True)
class StreamRecord:
    """What one stream sent: chunks, and whether it completed or was cut off early."""

    model: str
    chunks_sent: int = 0
    completed: bool = False
    ended: bool = False


@dataclass
class _State:
    api_key: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    failures: deque[_Failure] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    streams: list[StreamRecord] = field(default_factory=list)
    prefixes: set[str] = field(default_factory=set)
    chunk_delay_s: float = 0.0
    served: int = 0

    def take(self, model: str | None, header: str | None) -> _Failure | None:
        """The failure for a request for ``model``: its header's, else the first queued one
        that applies (used up when its times run out)."""
        if header:
            return _parse_header(header)
        with self.lock:
            for failure in self.failures:
                if failure.model is None or failure.model == model:
                    if failure.times is not None:
                        failure.times -= 1
                        if failure.times <= 0:
                            self.failures.remove(failure)
                    return failure
        return None


def _parse_header(value: str) -> _Failure:
    what, *args = [p.strip() for p in value.split(";")]
    failure = _Failure(int(what) if what.lstrip("-").isdigit() else what)
    for arg in args:
        name, _, text = arg.partition("=")
        if name == "retry_after":
            failure.retry_after = float(text)
        elif name == "after_chunks":
            failure.after_chunks = int(text)
        elif name == "delay_s":
            failure.delay_s = float(text)
    return failure


def _words(text: str) -> list[str]:
    return text.split()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _usage(state: _State, body: dict[str, Any], completion: int) -> dict[str, Any]:
    prompt = 0
    cached = 0
    for message in body.get("messages") or ():
        words = len(_words(_text(message.get("content"))))
        prompt += words
        if message.get("role") == "system":
            text = _text(message.get("content"))
            with state.lock:
                if text in state.prefixes:
                    cached += words
                state.prefixes.add(text)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _plan(body: dict[str, Any]) -> dict[str, Any]:
    """What the answer is: the words or the tool call, and the finish reason."""
    messages = body.get("messages") or []
    last_user = next(
        (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    last_role = messages[-1].get("role") if messages else None
    if tools and choice != "none" and last_role != "tool":
        name = tools[0].get("function", {}).get("name", "tool")
        if isinstance(choice, dict):
            name = choice.get("function", {}).get("name", name)
        return {
            "tool": {"name": name, "arguments": json.dumps({"query": last_user})},
            "finish": "tool_calls",
            "tokens": 1,
        }
    text = "echo: " + last_user
    fmt = (body.get("response_format") or {}).get("type")
    if fmt in ("json_object", "json_schema"):
        text = json.dumps({"echo": text})
    finish = "stop"
    stops = body.get("stop")
    for stop in [stops] if isinstance(stops, str) else stops or []:
        if stop and stop in text:
            text = text[: text.index(stop)]
    words = _words(text)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and len(words) > limit:
        words, finish = words[:limit], "length"
    return {"words": words, "finish": finish, "tokens": len(words)}


def _completion(state: _State, body: dict[str, Any], number: int) -> dict[str, Any]:
    plan = _plan(body)
    choices = []
    for i in range(int(body.get("n") or 1)):
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if "tool" in plan:
            message["tool_calls"] = [
                {"id": f"call_{number}_{i}", "type": "function", "function": plan["tool"]}
            ]
        else:
            message["content"] = " ".join(plan["words"])
        choices.append(
            {"index": i, "message": message, "finish_reason": plan["finish"], "logprobs": None}
        )
    n = len(choices)
    return {
        "id": f"chatcmpl-fake-{number}",
        "object": "chat.completion",
        "created": _CREATED,
        "model": body.get("model"),
        "choices": choices,
        "usage": _usage(state, body, plan["tokens"] * n),
        "system_fingerprint": "fp_fake",
    }


def _chunks(state: _State, body: dict[str, Any], number: int) -> list[dict[str, Any]]:
    """A streamed answer's chunks, in order (the usage chunk last, when asked)."""
    plan = _plan(body)
    n = int(body.get("n") or 1)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    head = {
        "id": f"chatcmpl-fake-{number}",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": body.get("model"),
        "system_fingerprint": "fp_fake",
    }

    def chunk(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = {
            **head,
            "choices": [{"index": i, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if include_usage:
            out["usage"] = None
        return out

    out = [chunk(i, {"role": "assistant", "content": ""}) for i in range(n)]
    if "tool" in plan:
        for i in range(n):
            call = {
                "index": 0,
                "id": f"call_{number}_{i}",
                "type": "function",
                "function": {"name": plan["tool"]["name"], "arguments": ""},
            }
            out.append(chunk(i, {"tool_calls": [call]}))
            args = {"index": 0, "function": {"arguments": plan["tool"]["arguments"]}}
            out.append(chunk(i, {"tool_calls": [args]}))
    else:
        for w, word in enumerate(plan["words"]):
            for i in range(n):
                out.append(chunk(i, {"content": word if w == 0 else " " + word}))
    out.extend(chunk(i, {}, plan["finish"]) for i in range(n))
    if include_usage:
        out.append({**head, "choices": [], "usage": _usage(state, body, plan["tokens"] * n)})
    return out


def _vector(text: str, dimensions: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        values.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("input")
    texts = [given] if isinstance(given, str) else list(given or [])
    dimensions = int(body.get("dimensions") or 8)
    data = []
    tokens = 0
    for i, item in enumerate(texts):
        text = item if isinstance(item, str) else json.dumps(item)
        tokens += len(_words(text)) if isinstance(item, str) else len(item)
        vector = _vector(text, dimensions)
        embedding: Any = vector
        if body.get("encoding_format") == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _error_body(status: int, message: str) -> bytes:
    error = {
        "message": message,
        "type": _ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        ),
        "param": None,
        "code": None,
    }
    return json.dumps({"error": error}).encode()


def _app(state: _State) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def error(status: int, message: str, retry_after: float | None = None) -> Response:
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        return Response(_error_body(status, message), status, headers, "application/json")

    async def answer(request: Request) -> Response:
        failure: _Failure | None = request.scope.get("fake.failure")
        body: dict[str, Any] = request.scope["fake.body"]
        if failure is not None and failure.delay_s:
            await asyncio.sleep(failure.delay_s)  # a slow upstream, on purpose
        expected = None if state.api_key is None else f"Bearer {state.api_key}"
        if expected is not None and request.headers.get("authorization") != expected:
            return error(401, "Incorrect API key provided")
        if failure is not None and isinstance(failure.what, int) and failure.what:
            return error(failure.what, f"failing on command ({failure.what})", failure.retry_after)
        if failure is not None and failure.what == "garbage" and not body.get("stream"):
            return Response(b"<html>not json", 200, media_type="text/html")
        if not isinstance(body.get("model"), str):
            return error(400, "you must provide a model parameter")
        with state.lock:
            state.served += 1
            number = state.served
        if request.url.path.endswith("/embeddings"):
            return JSONResponse(_embeddings(body))
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return error(400, "'messages' is a required property")
        if not body.get("stream"):
            if failure is not None and failure.what == "cut":
                return StreamingResponse(_cut(), media_type="application/json")
            return JSONResponse(_completion(state, body, number))
        record = StreamRecord(body["model"])
        with state.lock:
            state.streams.append(record)
        return StreamingResponse(
            _stream(state, _chunks(state, body, number), failure, record),
            media_type="text/event-stream",
        )

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}],
            }
        )

    async def command(request: Request) -> Response:
        args = await request.json()
        FakeOpenAI(state, "").fail(**args)
        return JSONResponse({"queued": len(state.failures)})

    async def reset(request: Request) -> Response:
        FakeOpenAI(state, "").reset()
        return JSONResponse({"reset": True})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", answer, methods=["POST"]),
            Route("/v1/embeddings", answer, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_fake/fail", command, methods=["POST"]),
            Route("/_fake/reset", reset, methods=["POST"]),
        ]
    )


def _front(state: _State, app: Any) -> Any:
    """The ASGI app uvicorn runs: reads the body, picks the request's failure, resets the
    connection itself when asked, and hands the rest to the Starlette app."""

    async def front(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in (
            "/v1/chat/completions",
            "/v1/embeddings",
        ):
            await app(scope, receive, send)
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(parts)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with state.lock:
            state.requests.append(body)
            state.paths.append(scope["path"])
        model = body.get("model") if isinstance(body.get("model"), str) else None
        failure = state.take(model, headers.get("x-fake-fail"))
        if failure is not None and failure.what == "reset":
            if failure.delay_s:
                await asyncio.sleep(failure.delay_s)
            _reset(send)
            return
        scope["fake.failure"] = failure
        scope["fake.body"] = body
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            message: dict[str, Any] = await receive()
            return message

        await app(scope, replay, send)

    return front


def _reset(send: Any) -> None:
    """Reset the request's connection (RST, no answer): uvicorn's send is a method of the
    request's cycle, which holds the transport."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionResetError("reset on command")  # at worst a 500
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _cut() -> AsyncIterator[bytes]:
    for _ in ():  # an async generator that fails at its first step
        yield b""
    raise ConnectionResetError("cut on command")  # uvicorn drops the connection


async def _stream(
    state: _State, chunks: list[dict[str, Any]], failure: _Failure | None, record: StreamRecord
) -> AsyncIterator[bytes]:
    try:
        for i, chunk in enumerate(chunks):
            if failure is not None and i == failure.after_chunks:
                if failure.what == "cut":
                    raise ConnectionResetError("cut on command")  # the connection drops
                if failure.what == "garbage":
                    yield b"data: {this is not json\n\n"
                    return
                if failure.what == "error_event":
                    error = {"message": "overloaded", "type": "server_error", "code": None}
                    yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
                    return
            if state.chunk_delay_s:
                await asyncio.sleep(state.chunk_delay_s)  # pacing, on purpose
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            record.chunks_sent += 1
        yield b"data: [DONE]\n\n"
        record.completed = True
    finally:
        record.ended = True


class FakeOpenAI:
    """The running fake: its URL, what it received, and its failure queue."""

    def __init__(self, state: _State, url: str) -> None:
        self._state = state
        self.url = url

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies received (chat and embeddings), oldest first."""
        with self._state.lock:
            return list(self._state.requests)

    def models_asked(self) -> list[str | None]:
        """The ``model`` of every request received, oldest first."""
        return [r.get("model") for r in self.requests]

    @property
    def streams(self) -> list[StreamRecord]:
        with self._state.lock:
            return list(self._state.streams)

    @property
    def chunk_delay_s(self) -> float:
        return self._state.chunk_delay_s

    @chunk_delay_s.setter
    def chunk_delay_s(self, seconds: float) -> None:
        self._state.chunk_delay_s = seconds

    def fail(
        self,
        what: int | str,
        *,
        times: int | None = 1,
        retry_after: float | None = None,
        after_chunks: int = 0,
        delay_s: float = 0.0,
        model: str | None = None,
    ) -> None:
        """The next ``times`` requests (for ``model``, when given; ``times=None``: every
        one until :meth:`reset`) fail with ``what`` (see the module's docs)."""
        if not (isinstance(what, int) or what in _KINDS):
            raise ValueError(f"unknown failure {what!r} (an HTTP status or one of {_KINDS})")
        with self._state.lock:
            self._state.failures.append(
                _Failure(what, retry_after, after_chunks, delay_s, model, times)
            )

    def reset(self) -> None:
        """Forget requests, streams, queued failures and seen prefixes; stop pacing."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.paths.clear()
            self._state.streams.clear()
            self._state.failures.clear()
            self._state.prefixes.clear()
            self._state.chunk_delay_s = 0.0


@contextmanager
def serve_fake_openai(
    api_key: str | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeOpenAI]:
    """The fake, served by uvicorn in a thread on a free port (or ``port``) until the
    block ends; its API is at ``fake.url + "/v1"``. ``api_key=None`` accepts any key."""
    import uvicorn

    state = _State(api_key)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        _front(state, _app(state)), log_level="critical", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        yield FakeOpenAI(state, f"http://{host}:{bound}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
