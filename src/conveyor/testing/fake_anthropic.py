"""A fake of Anthropic's Messages API, for tests and the quickstart: deterministic answers,
streamed or not, and failures on command.

::

    with serve_fake_anthropic(api_key="sk-ant-test") as fake:
        provider = AnthropicProvider({"base_url": fake.url, "api_key_env": "KEY_VAR"})
        fake.fail(529)                        # the next request: overloaded
        fake.fail(429, retry_after=2)         # then a rate limit with retry-after
        fake.fail("cut", after_events=4)      # a stream dropped after 4 events
        ...
        fake.requests[-1]                     # the last request's JSON body

The answer to a request is ``"echo: "`` and the last user text, word by word (a word is
a token here): ``max_tokens`` cuts it (``stop_reason: max_tokens``), a stop sequence ends
it (``stop_sequence``). With ``tools`` (and ``tool_choice`` not ``none``) and a last user
turn that is not a tool result, the answer calls a tool instead: the one ``tool_choice``
names, else the first, with ``{"query": <the last user text>}`` as input. Usage counts
words; a system prompt marked with ``cache_control`` is written to the "cache" on first
sight (``cache_creation_input_tokens``) and read from it afterwards
(``cache_read_input_tokens``). The server checks ``x-api-key`` (401) and
``anthropic-version`` and ``max_tokens`` (400) as Anthropic does.

Failures (:meth:`FakeAnthropic.fail`), each used by one request, in order: an HTTP status
with Anthropic's error body (429 with ``retry-after``, 529, 500, 400...); ``"error_event"``
(a 200 stream that sends an ``overloaded_error`` event after ``after_events`` events);
``"cut"`` (the connection dropped after the answer's headers and ``after_events``
events; for a request not streamed, before its body); ``"garbage"`` (200 with a body
that is not JSON). ``delay_s`` delays the answer's start; ``event_delay_s`` (an
attribute) paces every stream's events.
``POST /_fake/fail`` takes the same arguments as JSON, for a fake run out of process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

__all__ = ["FakeAnthropic", "StreamRecord", "serve_fake_anthropic"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(slots=True)
class _Failure:
    what: int | str
    retry_after: float | None = None
    after_events: int = 0
    delay_s: float = 0.0


@dataclass(slots=True)
class StreamRecord:
    """What the fake sent on one stream, and how the stream ended."""

    events_sent: int = 0
    #: True once message_stop was sent; False while streaming or when the client left.
    completed: bool = False
    #: True once the stream's generator ended, either way.
    ended: bool = False


@dataclass(slots=True)
class _State:
    api_key: str | None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    streams: list[StreamRecord] = field(default_factory=list)
    failures: deque[_Failure] = field(default_factory=deque)
    cached: set[str] = field(default_factory=set)
    event_delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    from starlette.responses import JSONResponse

    error_type = _ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return JSONResponse(body, status, headers)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or ():
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text(block.get("content")))
    return " ".join(parts)


def _answer(state: _State, body: dict[str, Any]) -> dict[str, Any]:
    """The message the fake answers ``body`` with (deterministic)."""
    messages = body["messages"]
    last = messages[-1]
    last_text = _text(last.get("content"))
    is_tool_result = isinstance(last.get("content"), list) and any(
        b.get("type") == "tool_result" for b in last["content"]
    )
    system = body.get("system") or ""
    system_words = len(_text(system).split())
    words = sum(len(_text(m.get("content")).split()) for m in messages)
    cache_read = cache_write = 0
    if isinstance(system, list) and any("cache_control" in b for b in system):
        key = json.dumps(system, sort_keys=True)
        with state.lock:
            seen = key in state.cached
            state.cached.add(key)
        if seen:
            cache_read = system_words
        else:
            cache_write = system_words
        system_words = 0
    usage = {
        "input_tokens": words + system_words,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": 0,
    }
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {"type": "auto"}
    content: list[dict[str, Any]]
    if tools and choice.get("type") != "none" and not is_tool_result:
        name = choice.get("name") if choice.get("type") == "tool" else tools[0]["name"]
        content = [
            {"type": "text", "text": "Let me look."},
            {
                "type": "tool_use",
                "id": f"toolu_{len(state.requests):04d}",
                "name": name,
                "input": {"query": last_text},
            },
        ]
        usage["output_tokens"] = 3 + len(last_text.split())
        stop_reason, stop_sequence = "tool_use", None
    else:
        answer = ("echo: " + last_text).split()
        stop_reason, stop_sequence = "end_turn", None
        if len(answer) > body["max_tokens"]:
            answer, stop_reason = answer[: body["max_tokens"]], "max_tokens"
        text = " ".join(answer)
        for stop in body.get("stop_sequences") or ():
            at = text.find(stop)
            if at >= 0 and (stop_sequence is None or at < text.find(stop_sequence)):
                stop_sequence = stop
        if stop_sequence is not None:
            text = text[: text.find(stop_sequence)]
            stop_reason = "stop_sequence"
        usage["output_tokens"] = len(text.split())
        content = [{"type": "text", "text": text}]
    return {
        "id": f"msg_{len(state.requests):04d}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


def _events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream events that deliver ``message``, as Anthropic sends them."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                )
        else:
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                }
            )
            arguments = json.dumps(block["input"])
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    }
                )
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message["stop_reason"],
                "stop_sequence": message["stop_sequence"],
            },
            "usage": {"output_tokens": usage["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _app(state: _State) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def messages(request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        with state.lock:
            failure = state.failures.popleft() if state.failures else None
        if failure is not None and failure.delay_s:
            await asyncio.sleep(failure.delay_s)  # a slow upstream, on purpose
        if state.api_key is not None and headers.get("x-api-key") != state.api_key:
            return _error(401, "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the body is not JSON")
        with state.lock:
            state.requests.append(body)
            state.headers.append(headers)
        if not isinstance(body.get("max_tokens"), int):
            return _error(400, "max_tokens: Field required")
        for message in body.get("messages") or ():
            if message.get("role") not in ("user", "assistant"):
                return _error(400, f"messages: role {message.get('role')!r} is not allowed")
        if failure is not None and isinstance(failure.what, int):
            retry = (
                {} if failure.retry_after is None else {"retry-after": f"{failure.retry_after:g}"}
            )
            return _error(failure.what, f"failing on command ({failure.what})", retry)
        if failure is not None and failure.what == "garbage":
            return Response(b"<html>not json", 200, media_type="text/html")
        message = _answer(state, body)
        if not body.get("stream"):
            if failure is not None and failure.what == "cut":
                # Headers, then the connection drops before the body.
                return StreamingResponse(_cut(), media_type="application/json")
            return JSONResponse(message)
        record = StreamRecord()
        with state.lock:
            state.streams.append(record)
        return StreamingResponse(
            _stream(state, message, failure, record), media_type="text/event-stream"
        )

    async def command(request: Request) -> Response:
        args = await request.json()
        FakeAnthropic(state, "").fail(**args)
        return JSONResponse({"queued": len(state.failures)})

    return Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/_fake/fail", command, methods=["POST"]),
        ]
    )


async def _cut() -> AsyncIterator[bytes]:
    for _ in ():  # an async generator that fails at its first step
        yield b""
    raise ConnectionResetError("cut on command")  # uvicorn drops the connection


async def _stream(
    state: _State, message: dict[str, Any], failure: _Failure | None, record: StreamRecord
) -> AsyncIterator[bytes]:
    try:
        for i, event in enumerate(_events(message)):
            if failure is not None and i == failure.after_events:
                if failure.what == "cut":
                    raise ConnectionResetError("cut on command")  # the connection drops
                if failure.what == "error_event":
                    yield _sse(
                        {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": "Overloaded"},
                        }
                    )
                    return
            if state.event_delay_s:
                await asyncio.sleep(state.event_delay_s)  # pacing, on purpose
            yield _sse(event)
            record.events_sent += 1
        record.completed = True
    finally:
        record.ended = True


class FakeAnthropic:
    """The running fake: its URL, what it received, and its failure queue."""

    def __init__(self, state: _State, url: str) -> None:
        self._state = state
        self.url = url

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies received (those that got past the key check), oldest first."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def headers(self) -> list[dict[str, str]]:
        with self._state.lock:
            return list(self._state.headers)

    @property
    def streams(self) -> list[StreamRecord]:
        with self._state.lock:
            return list(self._state.streams)

    @property
    def event_delay_s(self) -> float:
        return self._state.event_delay_s

    @event_delay_s.setter
    def event_delay_s(self, seconds: float) -> None:
        self._state.event_delay_s = seconds

    def fail(
        self,
        what: int | str,
        *,
        times: int = 1,
        retry_after: float | None = None,
        after_events: int = 0,
        delay_s: float = 0.0,
    ) -> None:
        """Make the next ``times`` requests fail with ``what`` (see the module's docs);
        ``what=0`` only delays (``delay_s``) and then answers."""
        if not (isinstance(what, int) or what in ("cut", "error_event", "garbage")):
            raise ValueError(f"unknown failure {what!r}")
        with self._state.lock:
            for _ in range(times):
                failure = _Failure(what, retry_after, after_events, delay_s)
                if what == 0:
                    failure.what = "none"
                self._state.failures.append(failure)

    def reset(self) -> None:
        """Forget requests, streams, queued failures and the cache; stop pacing."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.headers.clear()
            self._state.streams.clear()
            self._state.failures.clear()
            self._state.cached.clear()
            self._state.event_delay_s = 0.0


@contextmanager
def serve_fake_anthropic(
    api_key: str | None = "sk-ant-test", host: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeAnthropic]:
    """The fake, served by uvicorn in a thread on a free port (or ``port``) until the
    block ends. ``api_key=None`` accepts any key."""
    import uvicorn

    state = _State(api_key)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(_app(state), log_level="critical", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake Anthropic server did not start")
            time.sleep(0.01)
        yield FakeAnthropic(state, f"http://{host}:{bound}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
