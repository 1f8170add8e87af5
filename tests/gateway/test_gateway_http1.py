"""The gateway's HTTP/1.1 client (conveyor.gateway.providers.http1) against real sockets:
a small asyncio server in the test answers with the raw bytes each case needs (a length,
chunks, a body running to the close, a cut, nothing at all), so every way an upstream
answers or fails is the client's to handle."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from conveyor.gateway.providers.http1 import BadAnswer, ConnectFailed, Disconnected, Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]
"""Answers one request (its raw head and body given); returns whether to keep the
connection for the next one."""


class Upstream:
    """A raw HTTP/1.1 server on a free port: each request goes to ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.handler(reader, writer, request):
                    return
        finally:
            writer.close()


@asynccontextmanager
async def upstream(handler: Handler) -> AsyncIterator[tuple[Upstream, str]]:
    found = Upstream(handler)
    server = await asyncio.start_server(found._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield found, f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()


def answer(body: bytes, status: int = 200, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
        % (status, len(body), extra)
        + body
    )


async def fixed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    writer.write(answer(b'{"ok": true}'))
    await writer.drain()
    return True


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


def test_a_connection_is_kept_and_reused_and_the_request_is_as_given() -> None:
    async def main() -> None:
        async with upstream(fixed) as (server, url):
            pool = Pool(url, headers={"authorization": "Bearer sk-up"})
            for _ in range(5):
                got = await pool.send("/chat/completions", b'{"model": "m"}', timeout=5)
                assert got.status == 200
                assert await got.read() == b'{"ok": true}'
                await got.aclose()
            await pool.aclose()
        assert server.connections == 1
        head, _, body = server.requests[0].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
        assert b"authorization: Bearer sk-up" in lines
        assert b"content-length: 14" in lines
        assert body == b'{"model": "m"}'

    run(main())


def test_chunked_and_close_delimited_bodies_are_read_whole() -> None:
    async def chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"data: one\n\n", b"data: two\n\n"):
            w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")
        await w.drain()
        return True

    async def until_close(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await w.drain()
        return False

    async def main() -> None:
        async with upstream(chunked) as (server, url):
            pool = Pool(url)
            got = await pool.send("/x", b"{}", timeout=5)
            pieces = [piece async for piece in got.pieces()]
            assert b"".join(pieces) == b"data: one\n\ndata: two\n\n" and len(pieces) == 2
            await got.aclose()
            again = await pool.send("/x", b"{}", timeout=5)
            assert await again.read() == b"data: one\n\ndata: two\n\n"
            assert server.connections == 1  # read to its end: kept
            await pool.aclose()
        async with upstream(until_close) as (server, url):
            pool = Pool(url)
            for _ in range(2):
                got = await pool.send("/x", b"{}", timeout=5)
                assert await got.read() == b"all of it"
                await got.aclose()
            assert server.connections == 2  # closed after each answer: a new one
            await pool.aclose()

    run(main())


def test_an_answer_closed_early_drops_its_connection_and_finish_keeps_it() -> None:
    async def slow_stream(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        w.write(b"e\r\ndata: [DONE]\n\n\r\n")
        await w.drain()
        if b"/slow" in req:  # the terminating chunk comes later
            await asyncio.sleep(0.05)
        if b"/never" in req:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(r.read(1), 2)  # the client hangs up first
            return False
        w.write(b"0\r\n\r\n")
        await w.drain()
        return True

    async def main() -> None:
        async with upstream(slow_stream) as (server, url):
            pool = Pool(url)
            got = await pool.send("/never", b"{}", timeout=5)
            assert await anext(got.pieces()) == b"data: [DONE]\n\n"
            await got.aclose()  # the stream is not over: the connection is dropped
            got = await pool.send("/slow", b"{}", timeout=5)
            await anext(got.pieces())
            got.finish()  # the end comes later: read, then the connection goes back
            await asyncio.sleep(0.2)
            again = await pool.send("/x", b"{}", timeout=5)
            assert await again.read() == b"data: [DONE]\n\n"
            await again.aclose()
            assert server.connections == 2
            await pool.aclose()

    run(main())


def test_failures_are_told_apart() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: bytes) -> bool:
        if b"/reset" in req:
            w.transport.abort()  # nothing answered
            return False
        if b"/cut" in req:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
            await w.drain()
            return False
        if b"/garbage" in req:
            w.write(b"SMTP ready\r\n\r\n")
            await w.drain()
            return False
        if b"/late" in req:
            await asyncio.sleep(1.0)
        w.write(answer(b"{}"))
        await w.drain()
        return True

    async def main() -> None:
        async with upstream(handler) as (_, url):
            pool = Pool(url)
            with pytest.raises(Disconnected) as reset:
                await pool.send("/reset", b"{}", timeout=5)
            assert not reset.value.answered
            got = await pool.send("/cut", b"{}", timeout=5)
            with pytest.raises(Disconnected) as cut:
                await got.read()
            assert cut.value.answered
            with pytest.raises(BadAnswer):
                await pool.send("/garbage", b"{}", timeout=5)
            with pytest.raises(TimeoutError):
                await pool.send("/late", b"{}", timeout=0.2)
            fine = await pool.send("/fine", b"{}", timeout=5)  # the pool still serves
            assert fine.status == 200 and await fine.read() == b"{}"
            await pool.aclose()
        with pytest.raises(ConnectFailed):  # the server is gone: refused
            await Pool(url).send("/x", b"{}", timeout=5)

    run(main())


def test_callers_past_max_connections_wait_for_one_or_time_out() -> None:
    async def paced(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: bytes) -> bool:
        await asyncio.sleep(0.1)
        w.write(answer(b"{}"))
        await w.drain()
        return True

    async def call(pool: Pool, timeout: float) -> int:
        got = await pool.send("/x", b"{}", timeout=timeout)
        await got.read()
        await got.aclose()
        return got.status

    async def main() -> None:
        async with upstream(paced) as (server, url):
            pool = Pool(url, max_connections=2)
            assert await asyncio.gather(*(call(pool, 5) for _ in range(6))) == [200] * 6
            assert server.connections == 2
            waiting = [asyncio.ensure_future(call(pool, 0.05)) for _ in range(3)]
            done = await asyncio.gather(*waiting, return_exceptions=True)
            assert any(isinstance(x, TimeoutError) for x in done)  # the third waited too long
            assert await call(pool, 5) == 200  # and the pool is whole after it
            await pool.aclose()

    run(main())


def test_an_idle_connection_the_upstream_closed_is_not_reused() -> None:
    async def once(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: bytes) -> bool:
        w.write(answer(b"{}"))  # keep-alive announced, then closed anyway (idle timeout)
        await w.drain()
        return False

    async def main() -> None:
        async with upstream(once) as (server, url):
            pool = Pool(url)
            for _ in range(3):
                got = await pool.send("/x", b"{}", timeout=5)
                assert await got.read() == b"{}"
                await got.aclose()
                await asyncio.sleep(0.05)  # the close reaches the client
            assert server.connections == 3
            await pool.aclose()

    run(main())


def test_https_verifies_the_upstream_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def main() -> None:
        found = Upstream(fixed)
        server = await asyncio.start_server(found._serve, "127.0.0.1", 0, ssl=served)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        try:
            trusting = Pool(url, ssl_context=ssl.create_default_context(cafile=str(cert)))
            for _ in range(2):
                got = await trusting.send("/x", b"{}", timeout=5)
                assert got.status == 200 and await got.read() == b'{"ok": true}'
                await got.aclose()
            assert found.connections == 1  # kept alive over TLS too
            await trusting.aclose()
            with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
                await Pool(url).send("/x", b"{}", timeout=5)  # the default trust: refused
        finally:
            server.close()

    run(main())


def test_a_header_that_would_break_the_request_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid header"):
        Pool("http://127.0.0.1:1/v1", headers={"x-evil": "a\r\nhost: elsewhere"})
    with pytest.raises(ValueError, match="not an http"):
        Pool("ftp://example.com")
