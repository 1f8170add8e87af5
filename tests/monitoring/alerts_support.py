"""Local receivers for the alert sinks: a real HTTP server on a free port (webhook,
Slack, PagerDuty paths) and a real SMTP server (aiosmtpd), each in a thread."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """What the HTTP server got, by path. ``/ok/...`` answers 202, ``/fail/...`` 500,
    ``/hang/...`` waits for ``release`` (or 30 s) before answering 200."""

    url: str
    got: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.got.get(path, []))


@contextmanager
def http_receiver() -> Iterator[Receiver]:
    receiver = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            size = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(size) or b"null")
            with receiver.lock:
                receiver.hits[self.path] = receiver.hits.get(self.path, 0) + 1
            if self.path.startswith("/hang"):
                receiver.hanging.set()
                receiver.release.wait(30)
            if self.path.startswith("/fail"):
                self.send_response(500)
                self.end_headers()
                return
            with receiver.lock:
                receiver.got.setdefault(self.path, []).append(body)
            try:
                self.send_response(202)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success"}')
            except OSError:  # the client gave up (a hang past its timeout)
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[Any] = field(default_factory=list)


@contextmanager
def smtp_receiver() -> Iterator[Mailbox]:
    """A local SMTP server (aiosmtpd) keeping every message it receives."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    box = Mailbox("127.0.0.1", 0)

    class Keep:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            message = message_from_bytes(envelope.original_content)
            box.messages.append((list(envelope.rcpt_tos), message))
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd needs a port to check it started on
        probe.bind(("127.0.0.1", 0))
        box.port = probe.getsockname()[1]
    controller = Controller(Keep(), hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
