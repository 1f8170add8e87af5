"""An EventLog across process boundaries: interpreter exit and fork.

- Exit: ``EventLog`` holds a :func:`weakref.finalize` calling
  :func:`close_quietly`, which runs at interpreter exit (or when an unclosed
  log is garbage collected) and flushes the buffer with a time limit. At exit
  our own ``atexit`` hook runs those finalizers first (hooks run last in,
  first out): weakref's own exit hook walks every finalizer of the process
  and gives up ("dictionary changed size during iteration") when a writer
  thread creates one meanwhile, which lost a whole buffer once.
- Fork: a child inherits the parent's buffer, pooled connections and a
  writer thread that no longer exists. An ``os.register_at_fork`` hook,
  installed when the first log is opened (never at import), gives every
  live log in the child a fresh pool and an empty writer.
- ``multiprocessing`` fork children end with ``os._exit``, which skips exit
  hooks; multiprocessing's own finalizers run instead, so each log also
  registers one there, in the child.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from conveyor.events.writer import BatchWriter

if TYPE_CHECKING:
    from conveyor.events.log import EventLog

__all__ = ["close_quietly", "track", "untrack"]

log = logging.getLogger("conveyor.events")

#: How long closing at interpreter exit may take before giving up.
EXIT_TIMEOUT = 10.0

# Logs alive in this process, for the fork hook.
_LIVE: weakref.WeakSet[EventLog] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks_installed = False


def track(event_log: EventLog) -> None:
    """Look after ``event_log`` across forks (installing the hook on first use)."""
    global _hooks_installed
    with _hooks_lock:
        if not _hooks_installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            atexit.register(_close_live_at_exit)
            _hooks_installed = True
    _LIVE.add(event_log)
    import multiprocessing.util

    multiprocessing.util.register_after_fork(event_log, _register_child_finalizer)


def untrack(event_log: EventLog) -> None:
    _LIVE.discard(event_log)


def _close_live_at_exit() -> None:
    """Close every log nobody closed, through its own finalizer (which then never runs
    again), before weakref's exit hook walks the process's finalizers."""
    for event_log in list(_LIVE):
        finalizer = getattr(event_log, "_finalizer", None)
        if finalizer is not None and finalizer.alive:
            finalizer()


def close_quietly(
    writer: BatchWriter,
    release: Callable[[], None],
    url: str,
    in_own_thread: Callable[[], bool] | None = None,
) -> None:
    """Close a log nobody closed: at interpreter exit, or when it is garbage collected.

    ``in_own_thread`` tells whether this runs on a thread the backend's
    connection needs to flush (a stream client's event loop): the close is then
    handed to a new thread rather than deadlocking.
    """
    if in_own_thread is not None and in_own_thread():
        threading.Thread(
            target=close_quietly, args=(writer, release, url, None), daemon=True
        ).start()
        return
    try:
        writer.close(EXIT_TIMEOUT)
    except Exception as exc:
        log.error("closing the event log %s: %s", url, exc)
    finally:
        release()


def _after_fork_in_child() -> None:
    for event_log in list(_LIVE):
        event_log.after_fork_in_child()


def _register_child_finalizer(event_log: EventLog) -> None:
    # Runs in a multiprocessing child, after its finalizer registry was reset.
    import multiprocessing.util

    multiprocessing.util.Finalize(event_log, event_log._finalizer, exitpriority=10)
