"""Run the server: uvicorn (uvloop + httptools), several workers, graceful shutdown, JSON logs.

On SIGTERM each worker first drains (:mod:`conveyor.serving.drain`: readiness
fails, requests are still answered); then, as on Ctrl-C, uvicorn stops accepting
connections and waits for the requests in flight (up to ``graceful_s``); the app's
shutdown then drains every batch queue and shadow copy and flushes the event log.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "PROJECT_ENV",
    "SUPERVISOR_ENV",
    "JsonFormatter",
    "ThreadedServer",
    "die_with_supervisor",
    "free_port",
    "log_config",
    "serve",
]

PROJECT_ENV = "CONVEYOR_SERVE_PROJECT"
#: The pid of the process supervising ``serve --workers N`` (set for its workers).
SUPERVISOR_ENV = "CONVEYOR_SERVE_SUPERVISOR"


def die_with_supervisor() -> None:
    """In a worker of ``serve --workers N``: be sent SIGTERM (a drain) when the supervisor
    dies, however it died (``kill -9`` included), rather than live on as an orphan holding
    the port's socket; exit at once if it is already gone. Linux only (``prctl``); a no-op
    elsewhere and outside a supervised worker."""
    import signal
    import sys

    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl here: nothing to arm
        return
    if os.getppid() != int(supervisor):  # it died before the signal was armed
        os._exit(0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and request_id when set."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's ``log_config``: every logger through :class:`JsonFormatter`."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": handler},
        "loggers": {
            name: {"handlers": ["default"], "level": level.upper(), "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "conveyor")
        },
    }


def serve(
    project_root: str | os.PathLike[str],
    app: str,
    *,
    host: str,
    port: int,
    workers: int = 1,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    graceful_s: float = 30.0,
    log_level: str = "info",
    header_timeout_s: float = 10.0,
    keep_alive_s: float = 5.0,
    max_connections: int | None = 1000,
) -> None:
    """Serve the project at ``project_root`` until stopped (blocks).

    ``app`` is the import string of a uvicorn factory that opens the project
    named by ``CONVEYOR_SERVE_PROJECT`` (``conveyor.cli.serving:worker_app``),
    so each worker process builds its own app.
    """
    import uvicorn

    from conveyor.serving.protocol import HEADER_TIMEOUT_ENV

    os.environ[HEADER_TIMEOUT_ENV] = repr(float(header_timeout_s))
    os.environ[PROJECT_ENV] = str(Path(project_root).resolve())
    if workers > 1:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="conveyor-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if workers > 1:
        # the supervisor runs no app, so no start-up turns the collector back on
        # (conveyor._start turned it off); each worker is a fresh interpreter
        gc.enable()
    try:
        uvicorn.run(
            app,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            # By name: each worker process imports it (and reads the deadline from the env).
            http="conveyor.serving.protocol:GuardedHttpToolsProtocol",
            timeout_keep_alive=max(1, round(keep_alive_s)),
            limit_concurrency=max_connections,
            access_log=False,
            log_config=log_config(log_level),
            timeout_graceful_shutdown=int(graceful_s),
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bound_socket(host: str) -> socket.socket:
    """A TCP socket bound to a free port of ``host`` (uvicorn listens on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


class ThreadedServer:
    """An app served by uvicorn in a thread of this process, on a free loopback port.

    For notebooks, demos and tests: ``with ThreadedServer(app) as server:``
    returns once ``/v2/health/ready`` answers 200, or says nothing is deployed yet
    (``ready_s`` says how long that took); leaving the block shuts the server down
    gracefully.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 30.0,
        header_timeout_s: float | None = None,
        keep_alive_s: float = 5.0,
        max_connections: int | None = None,
    ):
        import threading

        import uvicorn

        self.app = app
        self.host = host
        # The server keeps the socket its port was found with: a port read off bind(0) and
        # closed could be handed to another process before uvicorn binds it again.
        self._socket = _bound_socket(host)
        self.port = int(self._socket.getsockname()[1])
        self.ready_timeout_s = ready_timeout_s
        self.ready_s: float | None = None
        from conveyor.serving.protocol import guarded_protocol

        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            http=guarded_protocol(header_timeout_s) if header_timeout_s else "auto",
            timeout_keep_alive=max(1, round(keep_alive_s)),
            limit_concurrency=max_connections,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ThreadedServer:
        import time

        import httpx

        started = time.perf_counter()
        self.thread.start()
        # One client for every poll: each new one reads the CA bundle (tens of ms of CPU
        # that the starting server, in this process, waits for).
        with httpx.Client(timeout=1) as client:
            while time.perf_counter() - started < self.ready_timeout_s:
                try:
                    answer = client.get(f"{self.url}/v2/health/ready")
                    # Up, and its first poll done: ready, or serving nothing yet ("empty").
                    if answer.status_code == 200 or answer.json().get("status") == "empty":
                        self.ready_s = time.perf_counter() - started
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the model server at {self.url} did not become ready")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Shut the server down; RuntimeError if its thread is still running after
        ``timeout_s`` (a shut-down hook that hangs, which a test must not pass over)."""
        self.server.should_exit = True
        if self.thread.ident is not None:  # started
            self.thread.join(timeout=timeout_s)
            if self.thread.is_alive():
                raise RuntimeError(
                    f"the model server at {self.url} did not stop within {timeout_s:g} s "
                    "(a shut-down hook or a request is still running)"
                )
        # uvicorn closes it after a shut-down, not after a failed start-up
        self._socket.close()

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
