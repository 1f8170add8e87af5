"""The gateway's HTTP/1.1 client for upstream calls: a pool of keep-alive connections per
upstream, each an asyncio protocol parsed by httptools (the parser uvicorn serves with),
TLS by the standard library's ``ssl``.

::

    pool = Pool("https://api.example.com/v1", headers={"authorization": "Bearer ..."})
    answer = await pool.send("/chat/completions", body, timeout=60.0)  # once its headers came
    answer.status, answer.headers.get("retry-after")
    content = await answer.read()                    # or: async for piece in answer.pieces()
    await answer.aclose()                            # early: the connection is dropped
    await pool.aclose()

**Why not httpx.** Measured against nginx answering a fixed completion (same process,
uvloop): httpx's ``AsyncClient`` costs about 570 us of CPU a request at one connection
and 1,130 us at 32 (httpcore checks every pooled connection's socket before each
request); aiohttp 165 and 70 us; this client 47 and 15 us. The gateway's own overhead
is a fraction of a millisecond, so the client was most of it. HTTP/2 and proxies are
left to httpx (:mod:`conveyor.gateway.providers.openai` picks it when either applies).

**What it does.** One request at a time per connection; a connection goes back to the
pool once its answer was read to the end with keep-alive, and is dropped otherwise (an
answer closed early, a failure, a cancelled call). Idle connections older than
``keepalive_s`` (5 s, as httpx) are not reused, nor are ones the upstream closed. At most
``max_connections`` are open; callers beyond wait for one, up to their timeout. Each
step has the call's ``timeout``: opening a connection (``connect_timeout_s``), waiting
for the pool, for the answer's headers, for each piece of its body. Bodies may come
with a length, chunked or until the connection closes; ``Content-Encoding`` is never
asked for, so answers come as they are.

Failures: :class:`ConnectFailed` (no connection: refused, unknown host, TLS, the
connect timeout), :class:`Disconnected` (the connection dropped; ``answered`` says
whether part of the answer had come), :class:`BadAnswer` (not HTTP), and the built-in
:class:`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

__all__ = ["Answer", "BadAnswer", "ConnectFailed", "Disconnected", "Pool"]

#: Bytes of an answer held before reading from its socket pauses (a slow reader).
_HIGH_WATER = 1 << 18
_TIMED_OUT = TimeoutError  # raised in a waiter by its timer


class ConnectFailed(OSError):
    """No connection to the upstream (refused, unknown host, TLS, connect timeout)."""


class Disconnected(ConnectionError):
    """The connection dropped before the answer was complete."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        #: Whether part of the answer had come (its status line at least).
        self.answered = answered


class BadAnswer(Exception):
    """What the upstream sent is not an HTTP/1.1 answer."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the answer under way on it."""

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.closed = False
        self.busy = False
        #: The caller is done; the rest of the answer is read and dropped, then the
        #: connection goes back to the pool (the timer drops it if the rest is late).
        self.draining: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.answered = False
        self.delimited = False  # a length or chunked: else the body runs to the close

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for: the connection is not usable
            self._fail(BadAnswer(f"the upstream sent {data[:60]!r} unasked"))
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadAnswer(f"the upstream's answer is not HTTP/1.1: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.draining is not None:
            self._drained()
            return
        if self.busy and not self.complete and self.error is None:
            if self.headers_done and not self.delimited and self.status >= 200:
                self.complete = True  # the body ran until the connection closed
            else:
                reason = f": {exc}" if exc is not None else ""
                self.error = Disconnected(
                    f"the upstream closed the connection before its answer was complete{reason}",
                    answered=self.answered,
                )
        self._wake()
        self.pool._lost(self)

    def pause_writing(self) -> None:  # request bodies are written at once; the buffer holds
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools' callbacks ---------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.status = parser.get_status_code()
        for name, value in self.raw_headers:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self.delimited = True
        if self.status < 200 or self.status in (204, 304):
            self.delimited = True
        if self.status >= 200:
            self.headers_done = True
            self._wake()
        else:  # an interim answer (100 Continue): the real one follows
            self.raw_headers = []

    def on_body(self, body: bytes) -> None:
        if self.draining is not None:
            return
        self.pieces.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:  # the end of an interim answer
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        if self.draining is not None:
            self._drained()
            return
        self._wake()

    # -- the caller's side ------------------------------------------------------------

    def drain(self, within: float) -> None:
        """Read the rest of the answer, then go back to the pool (dropped after ``within``)."""
        self.pieces.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        self.draining = self.loop.call_later(within, self._drained)

    def _drained(self) -> None:
        timer, self.draining = self.draining, None
        if timer is not None:
            timer.cancel()
        self.pool._release(self, reuse=self.reusable)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until something happens on the connection (or ``timeout``: TimeoutError)."""
        waiter = self.waiter = self.loop.create_future()
        timer = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and not self.closed
            and self.error is None
            and not self.pieces
        )


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_TIMED_OUT())


class _Headers:
    """An answer's headers: ``get(name)`` by lower-case name (the last one given)."""

    __slots__ = ("_found", "raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self._found: dict[str, str] | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        if self._found is None:
            self._found = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.raw}
        return self._found.get(name.lower(), default)

    def __repr__(self) -> str:
        return f"_Headers({self.raw!r})"


class Answer:
    """An upstream's answer, once its headers came: read its body, or close it."""

    __slots__ = ("_conn", "_done", "_timeout", "headers", "status")

    def __init__(self, conn: _Connection, timeout: float | None) -> None:
        self._conn = conn
        self._timeout = timeout
        self._done = False
        self.status = conn.status
        self.headers = _Headers(conn.raw_headers)

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        if conn.complete and not self._done:  # it came with its headers: no waiting
            pieces = conn.pieces
            body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            conn.buffered = 0
            self._release(True)
            return body
        parts = [piece async for piece in self.pieces()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body's pieces as they come (each within the call's timeout)."""
        conn = self._conn
        try:
            while True:
                if conn.pieces:
                    piece = conn.pieces.popleft()
                    conn.buffered -= len(piece)
                    if conn.paused and conn.buffered < _HIGH_WATER // 4:
                        conn.paused = False
                        if conn.transport is not None and not conn.closed:
                            conn.transport.resume_reading()
                    yield piece
                    continue
                if conn.complete:
                    break
                if conn.error is not None:
                    raise conn.error
                await conn.wait(self._timeout)
        except BaseException:
            self._release(False)
            raise
        self._release(True)

    async def aclose(self) -> None:
        """Done with the answer: its connection goes back to the pool if it was read to
        the end, else it is dropped (closing an upstream stream at once)."""
        self._release(self._conn.complete and not self._conn.pieces)

    def finish(self, within: float = 1.0) -> None:
        """Done with the answer though its end may not have come yet (a stream's
        ``[DONE]`` was read): the rest is read and dropped, and the connection goes back
        to the pool once it is complete, or is dropped after ``within`` seconds."""
        if self._done:
            return
        conn = self._conn
        if conn.complete or conn.error is not None or conn.closed:
            self._release(True)
            return
        self._done = True
        conn.drain(within)

    def _release(self, whole: bool) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        conn.pool._release(conn, reuse=whole and conn.reusable)


class Pool:
    """Keep-alive connections to one upstream (see the module)."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        connect_timeout_s: float = 5.0,
        keepalive_s: float = 5.0,
        ssl_context: _ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/").encode()
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self._ssl = ssl_context
        host = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port is not None and parts.port != (443 if self.https else 80):
            host = f"{host}:{parts.port}"
        lines = [_line("host", host)]
        lines += [_line(name, value) for name, value in (headers or {}).items()]
        self._head = b"".join(lines)
        self._idle: deque[_Connection] = deque()
        self._open = 0
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    def __repr__(self) -> str:
        scheme = "https" if self.https else "http"
        return f"Pool({scheme}://{self.host}:{self.port}, open={self._open})"

    async def send(
        self,
        path: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        method: str = "POST",
    ) -> Answer:
        """Send the request; its answer once its status and headers came."""
        conn = await self._acquire(timeout)
        try:
            conn.busy = True
            head = [method.encode(), b" ", self.prefix, path.encode(), b" HTTP/1.1\r\n", self._head]
            if headers:
                head += [_line(k, v) for k, v in headers.items()]
            head.append(b"content-length: %d\r\n\r\n" % len(body))
            head.append(body)
            transport = conn.transport
            assert transport is not None
            transport.write(b"".join(head))
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(timeout)
        except BaseException:
            self._release(conn, reuse=False)
            raise
        return Answer(conn, timeout)

    async def _acquire(self, timeout: float | None) -> _Connection:
        if self._closed:
            raise ConnectFailed("the pool is closed")
        loop = asyncio.get_running_loop()
        while True:
            now = time.monotonic()
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and now - conn.idle_since < self.keepalive_s:
                    conn._reset()
                    return conn
                self._drop(conn)
            if self._open < self.max_connections:
                self._open += 1
                try:
                    return await self._connect(loop, timeout)
                except BaseException:
                    self._open -= 1
                    self._hand_on(None)
                    raise
            waiter: asyncio.Future[_Connection | None] = loop.create_future()
            self._waiters.append(waiter)
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
            try:
                got = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._hand_on(waiter.result())  # handed one just as we gave up
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            if got is not None and not got.closed:  # (lost while handed over: try again)
                got._reset()
                return got

    async def _connect(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> _Connection:
        limit = self.connect_timeout_s if timeout is None else min(timeout, self.connect_timeout_s)
        ssl: _ssl.SSLContext | None = None
        if self.https:
            if self._ssl is None:
                self._ssl = _default_ssl()
            ssl = self._ssl
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, loop),
                    self.host,
                    self.port,
                    ssl=ssl,
                    server_hostname=self.host if ssl is not None else None,
                )
        except TimeoutError:
            raise ConnectFailed(
                f"no connection to {self.host}:{self.port} within {limit:g} s"
            ) from None
        except OSError as exc:  # refused, unreachable, unknown host, TLS (SSLError)
            raise ConnectFailed(f"no connection to {self.host}:{self.port}: {exc}") from exc
        return conn

    def _release(self, conn: _Connection, *, reuse: bool) -> None:
        conn.busy = False
        if reuse and not self._closed:
            conn.idle_since = time.monotonic()
            self._hand_on(conn)
            return
        if not conn.closed:
            conn.abort()
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        """``conn`` no longer counts as open (once), and a waiter may open another."""
        if conn.pool is not self:
            return
        conn.pool = _GONE
        conn.closed = True
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.abort()
        self._open -= 1
        self._hand_on(None)

    def _hand_on(self, conn: _Connection | None) -> None:
        """A connection (or a free slot: None) to the first caller waiting, else to the
        idle list."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    def _lost(self, conn: _Connection) -> None:
        """The upstream closed ``conn``; an idle one leaves the pool now."""
        if not conn.busy and conn.pool is self:
            with contextlib.suppress(ValueError):
                self._idle.remove(conn)
            self._drop(conn)

    async def aclose(self) -> None:
        """Close every connection; calls under way fail."""
        self._closed = True
        while self._idle:
            self._drop(self._idle.pop())
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the pool is closed"))
        self._waiters.clear()


def _line(name: str, value: str) -> bytes:
    """One header line; a name or value that would break the request is refused."""
    if any(c in name for c in ":\r\n ") or "\r" in value or "\n" in value:
        raise ValueError(f"not a valid header: {name!r}")
    return f"{name}: {value}\r\n".encode("latin-1")


class _Gone:
    """Where a dropped connection points, so it is dropped once."""

    def _release(self, conn: _Connection, *, reuse: bool) -> None:
        conn.abort()

    def _lost(self, conn: _Connection) -> None:
        pass


_GONE: Any = _Gone()


def _default_ssl() -> _ssl.SSLContext:
    """Certificates verified against certifi's bundle when installed (as httpx does), else
    the system's."""
    try:
        import certifi
    except ImportError:
        return _ssl.create_default_context()
    return _ssl.create_default_context(cafile=certifi.where())
