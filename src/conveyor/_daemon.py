"""One long-lived daemon thread that runs the calls handed to it, in order.

For background reads started from a request path (an alias re-read once a second, the
route poll twice a second): handing a call to a running worker costs a queue put, where
``threading.Thread(...).start()`` makes its caller wait until the new thread has run its
first bytecode. On a busy 2-core host that wait is the new thread's turn at the GIL, up to
the interpreter's switch interval (5 ms), and it fell on whichever request started the
read: a search paid 3.7-4.6 ms of "load" that way, once a second, inside its p99.

The thread is a daemon and nothing joins it: a call hung on a dead service holds this
worker (later calls queue behind it) but never the process's exit. :meth:`DaemonWorker.close`
ends the thread once what was queued has run, without waiting for it, so a service that is
closed leaves no idle thread behind.
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
    :meth:`submit` (and again after :meth:`close`). A call's exception is logged, not
    raised: report outcomes through the call itself (a future, an event)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # each thread has its queue: one closed while a call hangs keeps only what it had
        self._calls: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()

    def submit(self, call: Callable[[], object]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._calls = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._run, args=(self._calls,), name=self.name, daemon=True
                )
                self._thread.start()
            self._calls.put(call)

    def close(self) -> None:
        """End the thread after the calls already queued (a hung one included); returns at
        once."""
        with self._lock:
            if self._thread is not None:
                self._thread = None
                self._calls.put(None)

    def _run(self, calls: queue.SimpleQueue[Callable[[], object] | None]) -> None:
        while True:
            call = calls.get()
            if call is None:
                return
            try:
                call()
            except BaseException:
                log.exception("%s: a background call failed", self.name)
