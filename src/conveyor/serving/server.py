"""Run the server: uvicorn (uvloop + httptools), several workers, graceful shutdown, JSON logs.

On SIGTERM or Ctrl-C uvicorn stops accepting connections and waits for the
requests in flight (up to ``graceful_s``); the app's shutdown then drains
every batch queue and shadow copy and flushes the event log.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["PROJECT_ENV", "JsonFormatter", "log_config", "serve"]

PROJECT_ENV = "CONVEYOR_SERVE_PROJECT"


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
) -> None:
    """Serve the project at ``project_root`` until stopped (blocks).

    ``app`` is the import string of a uvicorn factory that opens the project
    named by ``CONVEYOR_SERVE_PROJECT`` (``conveyor.cli.serving:worker_app``),
    so each worker process builds its own app.
    """
    import uvicorn

    os.environ[PROJECT_ENV] = str(Path(project_root).resolve())
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="conveyor-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            app,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_config=log_config(log_level),
            timeout_graceful_shutdown=int(graceful_s),
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
