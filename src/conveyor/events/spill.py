"""Spill segments: where telemetry goes when the event log's sink is behind.

Telemetry (predictions, later LLM and tool calls) must never make a request
wait. When the writer's in-memory buffer is full, an event offered on the
telemetry path is appended to a local *segment* file instead (JSON lines, one
row each) and the request goes on. The writer thread loads segments back
into the sink, oldest first, once it has caught up, and deletes each one
after its rows are committed. Appends to the sink are idempotent by event id,
so a segment replayed twice (a crash between commit and delete) stores
nothing twice.

Segments are named ``<pid>-<number>.jsonl`` in the spill folder. A process
replays its own segments and adopts those of processes that no longer run
(a worker killed with ``kill -9`` leaves them; its successor loads them). A
line cut short by a crash is skipped and counted, never guessed at.

When no folder is configured, or the folder cannot be written, the event is
*shed*: counted (``shed``, a metric) and logged once a minute, never silently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = ["SpillSegments"]

log = logging.getLogger("conveyor.events")

#: Rows per segment before a new one is started.
SEGMENT_ROWS = 10_000


class SpillSegments:
    """The spill folder of one event log in this process."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._file: Any = None
        self._path: Path | None = None
        self._rows_in_file = 0
        self._number = 0
        self.spilled = 0
        self.replayed = 0
        self.damaged = 0

    def write(self, row: dict[str, Any]) -> bool:
        """Append one row; False when the folder cannot be written (the caller sheds)."""
        line = orjson.dumps(row) + b"\n"
        with self._lock:
            try:
                if self._file is None or self._rows_in_file >= SEGMENT_ROWS:
                    self._rotate()
                self._file.write(line)
                self._rows_in_file += 1
            except OSError as exc:
                log.error("cannot spill telemetry to %s: %s", self.folder, exc)
                self._close_file()
                return False
            self.spilled += 1
            return True

    def pending(self) -> list[Path]:
        """Segments waiting to be loaded: this process's and dead processes', oldest first."""
        try:
            names = list(self.folder.glob("*.jsonl"))
        except OSError:
            return []
        mine = os.getpid()
        found = []
        for path in names:
            pid_text = path.name.split("-", 1)[0]
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if pid == mine or not _alive(pid):
                found.append(path)
        return sorted(found, key=lambda p: (p.stat().st_mtime if p.exists() else 0, p.name))

    def take(self, path: Path) -> Iterator[dict[str, Any]]:
        """The rows of a segment (the open one is closed first, so it stops growing)."""
        with self._lock:
            if path == self._path:
                self._close_file()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.splitlines():
            if not line:
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.damaged += 1  # a line a crash cut short
                continue
            if isinstance(row, dict):
                yield row

    def done(self, path: Path, rows: int) -> None:
        """A segment's rows are committed: delete it."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.replayed += rows

    def close(self) -> None:
        with self._lock:
            self._close_file()

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's open segment is the parent's."""
        self._lock = threading.Lock()
        self._file = None
        self._path = None
        self._rows_in_file = 0

    def _rotate(self) -> None:
        self._close_file()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._number += 1
        self._path = self.folder / f"{os.getpid()}-{self._number:06d}.jsonl"
        # Unbuffered: each row is in the kernel when write() returns, so a process killed
        # with SIGKILL loses none of what it spilled (one syscall a row, only while behind).
        self._file = self._path.open("ab", buffering=0)
        self._rows_in_file = 0

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file = None
        self._path = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
