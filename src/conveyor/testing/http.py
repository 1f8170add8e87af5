"""A real HTTP server in a thread, for testing clients without mocks.

::

    def items(request: Request) -> Reply:
        page = int(request.arg("page", "1"))
        return Reply.json({"data": ROWS[page - 1] if page <= len(ROWS) else []})

    with serve({"/items": items}) as server:
        HTTPJSONSource(server.url("/items"), pagination="page").read()
        assert len(server.requests) == 3

A handler gets the parsed :class:`Request` and returns a :class:`Reply`
(status, headers, body, and an optional ``delay`` before answering, to
play a slow server). Every request is recorded, in arrival order, with the
server's monotonic clock. Unknown paths answer 404; a handler that raises
answers 500 and its exception is kept in :attr:`TestServer.failures`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Handler", "Reply", "Request", "TestServer", "serve"]


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: float
    """``time.monotonic()`` when the request arrived."""

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else default

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server answers; ``delay`` seconds pass before it does."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def json(
        cls,
        data: Any,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> Reply:
        return cls(
            status,
            json.dumps(data).encode(),
            {"Content-Type": "application/json", **(headers or {})},
            delay,
        )

    @classmethod
    def text(cls, text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, text.encode(), {"Content-Type": "text/plain", **(headers or {})})


Handler = Callable[[Request], Reply]


class TestServer:
    """The running server: its address and what it received."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        server: ThreadingHTTPServer,
        log: list[Request],
        failures: list[BaseException],
        lock: threading.Lock,
    ) -> None:
        self._server = server
        self._log = log
        self._failures = failures
        self._lock = lock
        host, port = server.server_address[:2]
        self.base = f"http://{host!s}:{port}"

    def url(self, path: str = "/") -> str:
        return self.base + (path if path.startswith("/") else "/" + path)

    @property
    def requests(self) -> list[Request]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._log)

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    @property
    def failures(self) -> list[BaseException]:
        """Exceptions raised by handlers (each answered 500)."""
        with self._lock:
            return list(self._failures)


@contextmanager
def serve(routes: Mapping[str, Handler], host: str = "127.0.0.1") -> Iterator[TestServer]:
    """Serve ``routes`` (path -> handler) on a free port until the block ends."""
    log: list[Request] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    table = dict(routes)

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
                received_at=time.monotonic(),
            )
            with lock:
                log.append(request)
            handler = table.get(parts.path)
            if handler is None:
                reply = Reply.json({"error": f"no route {parts.path}"}, status=404)
            else:
                try:
                    reply = handler(request)
                except Exception as exc:
                    # A failing handler (an assert in a test) answers 500 and is kept
                    # for the test to see, rather than vanishing in the server thread.
                    with lock:
                        failures.append(exc)
                    reply = Reply.text(f"handler failed: {exc!r}", status=500)
            if reply.delay:
                time.sleep(reply.delay)  # a slow server on purpose: what the test is about
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    class _Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that gave up (a timeout test) closes the socket under a
            # slow handler; that is the scenario, not a server failure.
            pass

    server = _Server((host, 0), _Handler)
    # A short poll interval: shutdown() waits up to one interval.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="conveyor-test-http", daemon=True
    )
    thread.start()
    try:
        yield TestServer(server, log, failures, lock)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
