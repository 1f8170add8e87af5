"""The request pipeline every Conveyor server shares: an explicit, ordered chain of stages.

::

    observe -> authenticate -> rate limit -> input limits -> handler

Every route of every server passes through the same chain, the hottest
(``POST /v1/models/{m}/predict``) included, so something added as a stage
cannot be skipped by accident. Each stage is an object with
``async __call__(call, next)``; the chain is composed once, when the app is
built, into nested calls.

- :class:`Observe`: the request id (``x-request-id`` when the client sends
  one, else a new one; echoed on every answer), a tracing span named after
  the route, every error turned into JSON (stable ``code``, status by class,
  :mod:`conveyor.web.errors`), and the request counted and timed.
- :class:`Authenticate`: the caller, by the one rule of
  :mod:`conveyor.governance.access` for the route's action; the store is read
  in a thread, only when a key is not in the in-process cache.
- :class:`RateLimit`: one token of the key's bucket; a remote limiter (Redis)
  is called in a thread, so the event loop never waits on the network.
- :class:`InputLimits`: a declared body larger than the limit is refused
  before it is read; :meth:`Call.body` enforces the limit while reading.

Nothing in the chain makes a synchronous network call on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from conveyor.errors import (
    BackendUnavailableError,
    ConveyorError,
    InvalidInputError,
    PayloadTooLargeError,
    RequestTimeoutError,
)
from conveyor.events.schema import new_event_id
from conveyor.web.errors import BadRequest, error_body, status_of

if TYPE_CHECKING:
    from conveyor.governance.access import Access, Caller
    from conveyor.governance.ratelimit import RateLimiter
    from conveyor.web.dependencies import Dependencies
    from conveyor.web.metrics import WebMetrics
    from conveyor.web.routing import Route

__all__ = [
    "Authenticate",
    "Call",
    "InputLimits",
    "Next",
    "Observe",
    "RateLimit",
    "Stage",
    "compose",
]

log = logging.getLogger("conveyor.web")

#: The rest of the chain, as a stage sees it.
Next = Callable[["Call"], Awaitable[Response]]

_MAX_REQUEST_ID = 128


class Stage(Protocol):
    """One step of the chain: do something, call ``next`` (or answer without it)."""

    async def __call__(self, call: Call, next: Next) -> Response: ...


class Call:
    """One request on its way through the chain: what stages learn, handlers read."""

    __slots__ = (
        "_body",
        "_request",
        "body_timeout",
        "caller",
        "content_length",
        "max_body",
        "params",
        "receive",
        "request_id",
        "route",
        "scope",
        "served_as",  # set by a handler only when it fails after choosing a version
        "span",
        "started",
        "token",
    )

    #: (version number, version id, arm): set by a handler only when it fails after choosing
    #: a version (read with getattr: unset on every other call, so it costs them nothing).
    served_as: tuple[int, str, str]

    def __init__(self, scope: dict[str, Any], receive: Any, route: Route, params: dict[str, str]):
        self.scope = scope
        self.receive = receive
        self.route = route
        self.params = params
        self.started = time.perf_counter()
        self.request_id = ""
        self.caller: Caller | None = None
        self.span: Any = None
        self.token: str | None = None
        self.content_length: int | None = None
        self.max_body: int | None = None
        self.body_timeout: float | None = None
        self._request: Request | None = None
        self._body: bytes | None = None
        # One pass over the raw headers for what the chain itself needs.
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"authorization":
                text = value.decode("latin-1")
                if text[:7].lower() == "bearer ":
                    self.token = self.token or text[7:].strip()
            elif name == b"x-api-key":
                self.token = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                self.content_length = int(value)
        # A generated id is time-ordered, as event ids are: the event log's request_id
        # index then grows at its end (a random uuid4 landed anywhere in the B-tree) and
        # no getrandom call is made per request.
        self.request_id = (
            request_id if request_id and len(request_id) <= _MAX_REQUEST_ID else new_event_id()
        )

    @property
    def request(self) -> Request:
        """Starlette's view of the request (headers, query string, the body stream)."""
        if self._request is None:
            self.scope["path_params"] = self.params
            self._request = Request(self.scope, self.receive)
        return self._request

    @property
    def actor(self) -> str:
        """Who is calling, as recorded in events and histories (``key:NAME``)."""
        return self.caller.actor if self.caller is not None else "anonymous"

    async def body(self) -> bytes:
        """The whole body, refused with 413 once it passes the limit (read once, kept)."""
        if self._body is not None:
            return self._body
        return await self._read(self._messages())

    async def _messages(self) -> AsyncIterator[bytes]:
        """The body's chunks straight from the server (no Request built on the hot path);
        each piece must come within ``body_timeout`` (a trickled body gets 408)."""
        timeout = self.body_timeout
        while True:
            if timeout is None:
                message = await self.receive()
            else:
                try:
                    # asyncio.timeout, not wait_for: no task made per piece of a body
                    async with asyncio.timeout(timeout):
                        message = await self.receive()
                except TimeoutError:
                    raise RequestTimeoutError(
                        f"the body did not arrive: nothing for {timeout:g} s",
                        field="body",
                        timeout_s=timeout,
                    ) from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    async def _read(self, chunks: AsyncIterator[bytes]) -> bytes:
        limit = self.max_body
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if limit is not None and size > limit:
                raise PayloadTooLargeError(
                    f"the body exceeds {limit} bytes", field="body", limit=limit
                )
            parts.append(chunk)
        self._body = parts[0] if len(parts) == 1 else b"".join(parts)
        return self._body


def compose(stages: Sequence[Stage]) -> Next:
    """The chain: each stage around the next, the route's endpoint last."""

    async def endpoint(call: Call) -> Response:
        return await call.route.endpoint(call)

    handler: Next = endpoint
    for stage in reversed(stages):
        handler = _link(stage, handler)
    return handler


def _link(stage: Stage, next_: Next) -> Next:
    async def run(call: Call) -> Response:
        return await stage(call, next_)

    return run


def _trace_context(scope: dict[str, Any]) -> Any:
    """The W3C trace context the request came with (``traceparent``, ``tracestate``), for
    its span to join the caller's trace; None: a trace of its own (or the current one,
    when an instrumentation middleware set it)."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name in (b"traceparent", b"tracestate")
    }
    if not carrier:
        return None
    from opentelemetry import propagate

    return propagate.extract(carrier)


class Observe:
    """Request id, tracing span, errors as JSON, request metrics: the outermost stage."""

    def __init__(self, metrics: WebMetrics) -> None:
        self.metrics = metrics
        self.tracer: Any = None

    def start(self) -> None:
        """Take the tracer at start-up (after the process configured its provider).

        A process that configured tracing (``opentelemetry-instrument``, or code that set
        a tracer provider) has imported OpenTelemetry by now; in one that has not, every
        span would be a no-op that still costs about 25 us a request, and importing the
        API a few tens of milliseconds of start-up: no spans then."""
        if "opentelemetry.trace" not in sys.modules:
            self.tracer = None
            return
        from opentelemetry import trace

        self.tracer = trace.get_tracer("conveyor.web")

    async def __call__(self, call: Call, next: Next) -> Response:
        route = call.route
        try:
            if self.tracer is None:
                response = await next(call)
            else:
                with self.tracer.start_as_current_span(
                    route.name,
                    context=_trace_context(call.scope),
                    attributes={"http.route": route.path, "request_id": call.request_id},
                ) as span:
                    call.span = span
                    response = await next(call)
        except BadRequest as bad:
            response = self._failed(call, bad.error, 400)
        except ConveyorError as exc:
            response = self._failed(call, exc, status_of(exc))
        except Exception:
            log.exception(
                "unexpected error on %s", call.scope["path"], extra={"request_id": call.request_id}
            )
            self.metrics.error("internal")
            response = Response(
                b'{"code":"internal","message":"the server failed; see its log","request_id":"'
                + call.request_id.encode()
                + b'"}',
                500,
                media_type="application/json",
            )
            if route.on_failure is not None:
                _tell(route, call, 500, "internal")
        response.raw_headers.append((b"x-request-id", call.request_id.encode("latin-1")))
        self.metrics.answered(route.name, response.status_code, time.perf_counter() - call.started)
        return response

    def _failed(self, call: Call, exc: ConveyorError, status: int) -> Response:
        self.metrics.error(exc.code)
        body, headers = error_body(exc, call.request_id)
        response = Response(body, status, media_type="application/json")
        response.raw_headers.extend(headers)
        if call.route.on_failure is not None:
            _tell(call.route, call, status, exc.code)
        log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "%s %s -> %d %s: %s",
            call.scope["method"],
            call.scope["path"],
            status,
            exc.code,
            exc.message,
            extra={"request_id": call.request_id},
        )
        return response


def _tell(route: Route, call: Call, status: int, code: str) -> None:
    """The route's failure hook; its own failure is logged, never the caller's problem."""
    try:
        route.on_failure(call, status, code)  # type: ignore[misc]  # checked by the caller
    except Exception:
        log.exception("the failure hook of %s raised", route.name)


class Authenticate:
    """The caller, allowed to do the route's action (open routes: anonymous)."""

    def __init__(self, access: Access, dependencies: Dependencies | None = None) -> None:
        from conveyor.governance.access import Caller

        self.access = access
        self._anonymous = Caller(None, "anonymous")
        self._run: Any = None
        self._stale_s = 0.0
        if dependencies is not None:
            limits = dependencies.limits

            def run(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
                return dependencies.call("store", limits.store_timeout_s, fn, *args)

            self._run, self._stale_s = run, limits.stale_keys_s

    async def __call__(self, call: Call, next: Next) -> Response:
        action = call.route.action
        if action is None:
            call.caller = self._anonymous
        else:
            call.caller = await self.access.authorize_async(
                call.token, action, run=self._run, stale_s=self._stale_s
            )
        return await next(call)


class RateLimit:
    """One token of the caller's bucket, when their key has a limit."""

    def __init__(self, limiter: RateLimiter, dependencies: Dependencies | None = None) -> None:
        self.limiter = limiter
        #: An in-process limiter answers at once; a remote one goes to a thread.
        self.local = bool(getattr(limiter, "local", False))
        self.dependencies = dependencies
        self._fallback: RateLimiter | None = None

    async def __call__(self, call: Call, next: Next) -> Response:
        caller = call.caller
        key = caller.key if caller is not None else None
        if key is not None and key.rate_per_second is not None:
            deps = self.dependencies
            if self.local:
                self.limiter.take(key.id, key.rate_per_second, key.burst)
            elif deps is None:
                await asyncio.to_thread(self.limiter.take, key.id, key.rate_per_second, key.burst)
            else:
                try:
                    await deps.call(
                        "ratelimit",
                        deps.limits.ratelimit_timeout_s,
                        self.limiter.take,
                        key.id,
                        key.rate_per_second,
                        key.burst,
                    )
                except BackendUnavailableError:
                    self._local_take(key.id, key.rate_per_second, key.burst, deps.workers)
        return await next(call)

    def _local_take(self, key_id: str, rate: float, burst: int | None, workers: int) -> None:
        """The shared limiter is down: this process's share of the key's budget."""
        import math

        from conveyor.governance.ratelimit import MemoryRateLimiter

        if self._fallback is None:
            self._fallback = MemoryRateLimiter()
        whole = burst if burst is not None else max(1, math.ceil(rate))
        self._fallback.take(key_id, rate / workers, max(1, math.ceil(whole / workers)))


class InputLimits:
    """A body declared larger than ``max_body_bytes`` is refused before it is read; one
    whose next piece takes longer than ``body_timeout_s`` to come is refused with 408."""

    def __init__(self, max_body_bytes: int, body_timeout_s: float | None = None) -> None:
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, call: Call, next: Next) -> Response:
        # A NUL byte is in no name, id or filter: PostgreSQL refuses it in text (a 500
        # from the driver), and a C library would cut the string there.
        for name, value in call.params.items():
            if "\x00" in value:
                raise InvalidInputError(f"{name} holds a NUL byte", field=name)
        query = call.scope.get("query_string", b"")
        if b"%00" in query or b"\x00" in query:
            raise InvalidInputError("the query string holds a NUL byte (%00)", field="query")
        limit = self.max_body_bytes
        call.max_body = limit
        call.body_timeout = self.body_timeout_s
        declared = call.content_length
        if declared is not None and declared > limit:
            raise PayloadTooLargeError(
                f"the body has {declared} bytes; this server takes at most {limit}",
                field="body",
                limit=limit,
            )
        return await next(call)
