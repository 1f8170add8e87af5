"""One long-lived daemon thread that runs the calls handed to it, in order.

For background reads started from a request path (an alias re-read once a second, the
route poll twice a second): handing a call to a running worker costs a queue put, where
``threading.Thread(...).start()`` makes its caller wait until the new thread has run its
first bytecode. On a busy 2-core host that wait is the new thread's turn at the GIL, up to
the interpreter's switch interval (5 ms), and it fell on whichever request started the
read: a search paid 3.7-4.6 ms of "load" that way, once a second, inside its p99.

The thread is a daemon and nothing joins it: a call hung on a dead service holds this
worker (later calls queue behind it) but never the process's exit.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["DaemonWorker"]

log = logging.getLogger(__name__)


class DaemonWorker:
    """Runs submitted calls one after another on a daemon thread started at the first
    :meth:`submit` (and again if it ever died). A call's exception is logged, not raised:
    report outcomes through the call itself (a future, an event)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, call: Callable[[], object]) -> None:
        self._calls.put(call)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            call = self._calls.get()
            try:
                call()
            except BaseException:
                log.exception("%s: a background call failed", self.name)
